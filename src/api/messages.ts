/**
 * @module api/messages — GET /v1/messages: the caller's messages newest first, filtered, by cursor; and
 * GET /v1/messages/{id}: one message's recipients, their state and event history (owner only).
 */
import { Elysia, t } from "elysia";
import { parseAddress } from "../mail/address.ts";
import { ApiError } from "../mail/errors.ts";
import { messageJson, type MessageFilter } from "../queue/inspect.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody, Event } from "./model.ts";
import { checkQueryNames, limitParam, timeParam } from "./params.ts";

export const MAX_MESSAGES_PAGE = 500;
const STATUSES = ["queued", "deferred", "delivered", "bounced", "suppressed"] as const;

const Recipient = t.Object({
  id: t.String(),
  address: t.String(),
  status: t.String({ description: "queued, deferred, delivered, bounced or suppressed (a held recipient is deferred)" }),
  held: t.Boolean({ description: "an operator holds it (outpost queue hold): no attempt until it is released" }),
  in_flight: t.Boolean({ description: "a delivery attempt is under way" }),
  attempts: t.Integer({ description: "delivery attempts so far" }),
  next_attempt_at: t.Union([t.String({ format: "date-time" }), t.Null()], { description: "when the next attempt is due (queued or deferred, not held), else null" }),
  last_reply: t.Union([t.String(), t.Null()], { description: "the last SMTP reply from the receiving server" }),
  last_status: t.Union([t.String(), t.Null()], { description: "its enhanced status code, such as 4.7.1" }),
  last_mx: t.Union([t.String(), t.Null()], { description: "the host that gave it" }),
});

const MessageFields = {
  id: t.String({ description: "the message id (`message_id` in events)" }),
  message_id: t.Union([t.String(), t.Null()], {
    description: "the RFC 5322 Message-ID, with its angle brackets (null for mail stored before outpost kept it)",
  }),
  created_at: t.String({ format: "date-time", description: "RFC 3339, UTC" }),
  envelope: t.String({ description: "the envelope sender" }),
  subject: t.String(),
  size: t.Integer({ description: "bytes of the stored MIME message" }),
  source: t.String({ description: "how it arrived: api, smtp or dsn" }),
  user_id: t.Union([t.Integer(), t.Null()], { description: "the user who sent it" }),
  tag: t.Union([t.String(), t.Null()], { description: "the tag given at sending, or null" }),
  metadata: t.Record(t.String(), t.String(), { description: "the metadata given at sending ({} when none)" }),
  options: t.Object(
    {
      inlinizecss: t.Boolean(),
      clicktracking: t.Boolean(),
      openstracking: t.Boolean(),
      bouncetracking: t.Boolean(),
      unsubscribe: t.Boolean({ description: "List-Unsubscribe with one-click (RFC 8058)" }),
    },
    { description: "the message options in force" },
  ),
};

const MessageBody = t.Object({
  ...MessageFields,
  recipients: t.Array(
    t.Composite([Recipient, t.Object({ events: t.Array(Event, { description: "this recipient's history, oldest first" }) })]),
  ),
});

const MessageSummary = t.Object({ ...MessageFields, recipients: t.Array(Recipient) });

const ListQuery = t.Object({
  status: t.Optional(t.String({ description: `messages with a recipient in this status: ${STATUSES.join(", ")}` })),
  recipient: t.Optional(t.String({ description: "messages to this address (compared as one mailbox: case and spelling do not matter)" })),
  tag: t.Optional(t.String({ description: "messages with this tag" })),
  since: t.Optional(t.String({ description: "created at or after: RFC 3339 (2026-12-01T00:00:00Z) or unix seconds" })),
  until: t.Optional(t.String({ description: "created before: RFC 3339 or unix seconds" })),
  limit: t.Optional(t.String({ description: `messages per page, 1 to ${MAX_MESSAGES_PAGE} (default 50)` })),
  cursor: t.Optional(t.String({ description: "next_cursor of the previous page" })),
});
type ListQuery = typeof ListQuery.static;
const LIST_PARAMS = Object.keys(ListQuery.properties);

/** The page's last message as an opaque token: base64url of [created_at, id]. */
function cursorOf(m: { createdAt: number; id: string }): string {
  return Buffer.from(JSON.stringify([m.createdAt, m.id])).toString("base64url");
}

function afterOf(cursor: string): MessageFilter["after"] {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && typeof v[1] === "string") return { createdAt: v[0], id: v[1] };
  } catch {
    // not JSON: refused below like any other foreign cursor
  }
  throw new ApiError(400, "invalid_request", "cursor is not a next_cursor this API gave", "cursor");
}

function filterOf(userId: MessageFilter["userId"], q: ListQuery): MessageFilter {
  const f: MessageFilter = { userId, limit: limitParam(q.limit, 50, MAX_MESSAGES_PAGE) };
  if (q.status !== undefined) {
    const status = STATUSES.find((s) => s === q.status);
    if (!status) throw new ApiError(400, "invalid_request", `status must be one of ${STATUSES.join(", ")}`, "status");
    f.status = status;
  }
  if (q.recipient !== undefined) {
    const p = parseAddress(q.recipient.trim());
    if (!p.ok) throw new ApiError(400, "invalid_request", `recipient: ${JSON.stringify(q.recipient)} is not a valid email address`, "recipient");
    f.recipientKey = p.key;
  }
  if (q.tag !== undefined) f.tag = q.tag.trim();
  f.since = timeParam("since", q.since);
  f.until = timeParam("until", q.until);
  if (q.cursor !== undefined) f.after = afterOf(q.cursor);
  return f;
}

export function messageRoutes(ctx: ApiContext) {
  return new Elysia()
    .get(
      "/v1/messages",
      ({ query, request }) => {
        checkQueryNames(request, LIST_PARAMS);
        const who = ctx.auth.principalOf(request);
        const page = ctx.inspector.listMessages(filterOf(who.userId, query));
        const now = Date.now();
        const last = page.messages[page.messages.length - 1];
        return { messages: page.messages.map((m) => messageJson(m, now)), next_cursor: page.more && last ? cursorOf(last) : null };
      },
      {
        query: ListQuery,
        response: {
          200: t.Object({
            messages: t.Array(MessageSummary, { description: "newest first" }),
            next_cursor: t.Union([t.String(), t.Null()], { description: "pass as cursor (with the same filters) for the next page; null on the last page" }),
          }),
          400: ErrorBody,
          401: ErrorBody,
          429: ErrorBody,
        },
        detail: {
          tags: ["messages"],
          summary: "The caller's messages, newest first, filtered, by cursor",
          description:
            "Each message as GET /v1/messages/{id} shows it, without the events. A message sent while you page never shifts a later page. Unknown parameters are a 400.",
        },
      },
    )
    .get(
      "/v1/messages/:id",
      ({ params, request }) => {
        const who = ctx.auth.principalOf(request);
        const m = ctx.inspector.getMessage(params.id);
        // someone else's message is "not found", so ids cannot be probed
        if (!m || m.userId !== who.userId) throw new ApiError(404, "not_found", `no message ${params.id}`, "id");
        const history = ctx.events.historyOf(m.id);
        const json = messageJson(m, Date.now());
        return { ...json, recipients: json.recipients.map((r) => ({ ...r, events: history.get(r.id) ?? [] })) };
      },
      {
        params: t.Object({ id: t.String({ description: "the message id from POST /v1/send" }) }),
        response: { 200: MessageBody, 401: ErrorBody, 404: ErrorBody, 429: ErrorBody },
        detail: { tags: ["messages"], summary: "A message's delivery status and history" },
      },
    );
}
