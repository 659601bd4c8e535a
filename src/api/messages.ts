/** @module api/messages — GET /v1/messages/{id}: a message's recipients, their state and event history (owner only). */
import { Elysia, t } from "elysia";
import { ApiError } from "../mail/errors.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody, Event } from "./model.ts";

const MessageBody = t.Object({
  id: t.String(),
  created_at: t.String({ format: "date-time", description: "RFC 3339, UTC" }),
  envelope: t.String({ description: "the envelope sender" }),
  subject: t.String(),
  size: t.Integer({ description: "bytes of the stored MIME message" }),
  options: t.Object(
    { inlinizecss: t.Boolean(), clicktracking: t.Boolean(), openstracking: t.Boolean(), bouncetracking: t.Boolean() },
    { description: "the message options in force" },
  ),
  recipients: t.Array(
    t.Object({
      address: t.String(),
      id: t.String(),
      status: t.String({ description: "queued, deferred, delivered, bounced or suppressed" }),
      attempts: t.Integer({ description: "delivery attempts so far" }),
      last_reply: t.Union([t.String(), t.Null()], { description: "the last SMTP reply from the receiving server" }),
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
      return {
        id: m.id,
        created_at: new Date(m.createdAt).toISOString(),
        envelope: m.envelopeFrom,
        subject: m.subject,
        size: m.size,
        options: {
          inlinizecss: m.options.inlineCss,
          clicktracking: m.options.trackClicks,
          openstracking: m.options.trackOpens,
          bouncetracking: m.options.trackBounces,
        },
        recipients: m.recipients.map((r) => ({
          address: r.address,
          id: r.id,
          status: r.status,
          attempts: r.attempts,
          last_reply: r.lastReply,
          events: history.get(r.id) ?? [],
        })),
      };
    },
    {
      params: t.Object({ id: t.String({ description: "the message id from POST /v1/send" }) }),
      response: { 200: MessageBody, 401: ErrorBody, 404: ErrorBody, 429: ErrorBody },
      detail: { tags: ["messages"], summary: "A message's delivery status and history" },
    },
  );
}
