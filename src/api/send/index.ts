/** @module api/send — POST /v1/send: read the body (any of three forms), validate, send, answer 202 after the commit. */
import { Elysia, t, type TSchema } from "elysia";
import { ErrorBody } from "../model.ts";
import type { ApiContext } from "../context.ts";
import { SendBody, SendResult } from "./model.ts";
import { readSendFields } from "./read.ts";

const REPLAYED = t.Literal("true", { description: "present when this is the stored answer to an earlier request with the same idempotency key" });
const RETRY_AFTER = t.String({ description: "seconds to wait before trying again" });

/**
 * A response schema that also documents response headers: @elysiajs/openapi reads a `headers` key on the
 * schema into the OpenAPI response (and strips it from the body schema). Validation ignores the key.
 */
function withHeaders<S extends TSchema>(schema: S, headers: Record<string, TSchema>): S {
  return { ...schema, headers };
}

export function sendRoutes(ctx: ApiContext) {
  return new Elysia().post(
    "/v1/send",
    async ({ body, request, server, status, set }) => {
      const ip = server?.requestIP(request)?.address ?? null;
      const who = ctx.auth.principalOf(request);
      const out = await ctx.sender.send(who, body, request.headers.get("idempotency-key"), ip);
      if (out.replayed) ctx.counters.replayed();
      // the API's counterpart of SMTP's smtp_message line: who submitted what, from where
      ctx.log.info("api_message", {
        queue_id: out.result.id,
        message_id: out.result.messageIdHeader,
        client_ip: ip,
        user: who.userName,
        key: who.keyId.slice(0, 12),
        sender: out.envelope,
        recipients: out.result.recipients.map((r) => r.address),
        replayed: out.replayed,
      });
      if (out.replayed) set.headers["idempotent-replayed"] = "true";
      const r = out.result;
      return status(202, { id: r.id, message_id: r.messageIdHeader, recipients: r.recipients });
    },
    {
      // Our reader resolves aliases and case and collects repeated form fields; it always returns a body, so the
      // named parsers after it never run — they are listed so the OpenAPI document shows the three content types.
      parse: [({ request }) => readSendFields(request, ctx.maxRequestBytes), "json", "urlencoded", "formdata"],
      body: SendBody,
      response: {
        202: withHeaders(SendResult, { "Idempotent-Replayed": REPLAYED }),
        400: ErrorBody,
        401: ErrorBody,
        403: ErrorBody,
        409: ErrorBody,
        413: ErrorBody,
        415: ErrorBody,
        429: withHeaders(ErrorBody, { "Retry-After": RETRY_AFTER }),
        503: withHeaders(ErrorBody, { "Retry-After": RETRY_AFTER }),
      },
      detail: {
        tags: ["send"],
        // read from the request by hand (not a `headers` schema), so it is declared for the document here
        parameters: [
          {
            name: "Idempotency-Key",
            in: "header",
            required: false,
            description: "like the idempotency_key field: a repeat of the same request with the same key within 24 h returns the first answer and queues nothing; another payload is a 409",
            schema: { type: "string", minLength: 1, maxLength: 255 },
          },
        ],
        summary: "Send a message",
        description:
          "Queues a message and answers 202 once it is durably stored. Give `body` (a complete MIME message) or structured fields " +
          "(`from`, `reply_to`, `to`, `cc`, `bcc`, `subject`, `text`, `html`, `headers`, `attachments`); `{from, to, subject, text}` is enough: " +
          "the envelope sender defaults to the author. `tag` and `metadata` are carried by the message and every one of its events. " +
          "Field names are case-insensitive; " +
          "aliases: recipients → recipient, mime → body, attachment → attachments, replyto/reply-to → reply_to, inlinecss/inlineizecss → inlinizecss, " +
          "trackclicks → clicktracking, trackopens → openstracking, trackbounces → bouncetracking, listunsubscribe → unsubscribe. Without `recipient` the message " +
          "goes to its To, Cc and Bcc addresses. In forms, repeat a list field or separate addresses with commas. In JSON, null is the " +
          "same as leaving a field out. Errors name the field as the request wrote it. An idempotency key repeated with another payload is a 409; " +
          "a body of another Content-Type a 415.",
      },
    },
  );
}
