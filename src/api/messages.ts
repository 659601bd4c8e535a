/** @module api/messages — GET /v1/messages/{id}: a message's recipients, their state and event history (owner only). */
import { Elysia, t } from "elysia";
import { ApiError } from "../mail/errors.ts";
import { messageJson } from "../queue/inspect.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody, Event } from "./model.ts";

const MessageBody = t.Object({
  id: t.String(),
  message_id: t.Union([t.String(), t.Null()], { description: "the RFC 5322 Message-ID, with its angle brackets (null for mail stored before outpost kept it)" }),
  created_at: t.String({ format: "date-time", description: "RFC 3339, UTC" }),
  envelope: t.String({ description: "the envelope sender" }),
  subject: t.String(),
  size: t.Integer({ description: "bytes of the stored MIME message" }),
  source: t.String({ description: "how it arrived: api, smtp or dsn" }),
  user_id: t.Union([t.Integer(), t.Null()], { description: "the user who sent it" }),
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
  recipients: t.Array(
    t.Object({
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
      events: t.Array(Event, { description: "this recipient's history, oldest first" }),
    }),
  ),
});

export function messageRoutes(ctx: ApiContext) {
  return new Elysia().get(
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
