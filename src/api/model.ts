/** @module api/model — schemas shared by every route: the error body of docs/api.md and the EVENT shape. */
import { t } from "elysia";
import { EVENT_TYPES } from "../config/build.ts";

export const ErrorBody = t.Object(
  {
    error: t.Object({
      code: t.String({
        description:
          "invalid_request (400), unauthorized (401), forbidden (403), not_found (404), method_not_allowed (405, with an Allow header), conflict (409), length_required (411), too_large (413), unsupported_media_type (415), rate_limited (429), unavailable (503), internal_error (500)",
      }),
      message: t.String({ description: "what is wrong, for people" }),
      field: t.Union([t.String(), t.Null()], {
        description: "the request field at fault (e.g. `recipient`, `attachments[0].content`, `limit`), or null",
      }),
    }),
  },
  { description: "every error has this shape" },
);
export type ErrorBody = typeof ErrorBody.static;

export const Event = t.Object(
  {
    id: t.String({ description: "event id; also a cursor value for GET /v1/events" }),
    type: t.String({ description: EVENT_TYPES.join(", ") }),
    time: t.String({ format: "date-time", description: "RFC 3339, UTC" }),
    message_id: t.String({ description: "the message's id (as POST /v1/send answered `id`)" }),
    recipient: t.Union([t.String(), t.Null()], { description: "the recipient address" }),
    tag: t.Union([t.String(), t.Null()], { description: "the message's tag, or null" }),
    metadata: t.Record(t.String(), t.String(), { description: "the message's metadata ({} when none)" }),
    details: t.Record(t.String(), t.Unknown(), {
      description:
        "what applies: mx, reply (the SMTP reply), status (enhanced code such as 5.1.1); for clicked, opened and unsubscribed: url and link_index (clicks), user_agent, client_ip",
    }),
  },
  { description: "EVENT" },
);

