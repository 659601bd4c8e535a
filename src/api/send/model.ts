/**
 * @module api/send/model — the fields of POST /v1/send (after aliases and case are resolved) and its answer.
 * The descriptions here are what the OpenAPI document and the docs page show.
 */
import { t } from "elysia";
import { METADATA_KEY_MAX, METADATA_MAX_KEYS, METADATA_VALUE_MAX, TAG_MAX } from "../../intake/labels.ts";

const AddressList = t.Union([t.String(), t.Array(t.String())], {
  description: "one address, a comma-separated list, or an array (in forms: repeat the field)",
});

/** A message option: true/false, 1/0, "true"/"false", "1"/"0" (also yes/no, on/off); omitted → the `[tracking]` default. */
const flag = (what: string) =>
  t.Optional(
    t.Union(
      [t.Boolean(), t.Literal(1), t.Literal(0), ...["true", "false", "1", "0", "yes", "no", "on", "off"].map((v) => t.Literal(v))],
      { description: `${what}. true/false, 1/0, "true"/"false"; omitted: the default from [tracking] in the config` },
    ),
  );

export const AttachmentObject = t.Object(
  {
    filename: t.Optional(t.String({ description: "file name shown to the reader" })),
    content: t.String({ description: "the file's bytes, base64" }),
    content_type: t.Optional(t.String({ description: "MIME type; guessed from filename when omitted (alias contenttype)" })),
    cid: t.Optional(t.String({ description: "Content-ID, for inline images the HTML shows as cid:…" })),
  },
  { description: "an attachment" },
);

export const SendBody = t.Object(
  {
    envelope: t.Optional(
      t.String({
        description:
          "the envelope sender (MAIL FROM); default: the address of `from`, or of the `body`'s Sender: header, else of its From: header",
      }),
    ),
    recipient: t.Optional(
      t.Union([t.String(), t.Array(t.String())], {
        description:
          "envelope recipients (alias `recipients`): one address, comma-separated, or an array. Omitted: the To, Cc and Bcc of `body`, or to+cc+bcc of the structured fields",
      }),
    ),
    body: t.Optional(
      t.Union([t.String(), t.File()], {
        description: "the complete MIME message (alias `mime`); in multipart it may be a file part",
      }),
    ),
    from: t.Optional(t.String({ description: "structured: the From header (one mailbox); default: the envelope sender. `envelope` or `from` is required" })),
    reply_to: t.Optional(
      t.Union([t.String(), t.Array(t.String())], {
        description: "structured: the Reply-To header: one address or several, like `to` (aliases `replyto`, `reply-to`)",
      }),
    ),
    to: t.Optional(AddressList),
    cc: t.Optional(AddressList),
    bcc: t.Optional(AddressList),
    subject: t.Optional(t.String({ description: "structured: the Subject" })),
    text: t.Optional(t.String({ description: "structured: the text/plain part" })),
    html: t.Optional(t.String({ description: "structured: the text/html part" })),
    headers: t.Optional(
      t.Union(
        [
          t.Record(t.String(), t.Union([t.String(), t.Array(t.String())])),
          t.Array(t.Union([t.String(), t.Object({ name: t.String(), value: t.String() })])),
        ],
        {
          description:
            'structured: extra header fields, as {"Name": "value"}, [{"name","value"}] or ["Name: value"] (in forms: repeated "Name: value" fields or JSON)',
        },
      ),
    ),
    attachments: t.Optional(
      t.Array(t.Union([AttachmentObject, t.File()]), {
        description: "structured: attachments (alias `attachment`); in multipart also file parts",
      }),
    ),
    inlinizecss: flag("inline CSS in the HTML parts (aliases inlinecss, inlineizecss)"),
    clicktracking: flag("rewrite links through outpost and record clicks (alias trackclicks)"),
    openstracking: flag("add a tracking pixel and record opens (alias trackopens)"),
    bouncetracking: flag("VERP return path on the bounce domain, record bounces (alias trackbounces)"),
    unsubscribe: flag("List-Unsubscribe with one-click (RFC 8058) per recipient; an unsubscribe suppresses the address for you (alias listunsubscribe)"),
    tag: t.Optional(
      t.String({
        description: `a label of yours, carried by the message and every one of its events; ${TAG_MAX} characters at most, no control characters ("" is none). GET /v1/messages?tag= finds it`,
      }),
    ),
    metadata: t.Optional(
      t.Record(t.String(), t.String(), {
        description:
          `your own key/value strings, carried by the message and every one of its events: at most ${METADATA_MAX_KEYS} keys of 1 to ${METADATA_KEY_MAX} characters [A-Za-z0-9_-], values of at most ${METADATA_VALUE_MAX} characters. In forms: JSON, or metadata[KEY]=value fields`,
      }),
    ),
    idempotency_key: t.Optional(
      t.String({
        minLength: 1,
        maxLength: 255,
        description:
          "a repeat with the same key and the same payload within 24 h returns the first answer and queues nothing; with another payload it is a 409 (or header Idempotency-Key)",
      }),
    ),
  },
  {
    description:
      "Give either `body` (a complete MIME message) or structured fields. Field names are case-insensitive; in JSON, null is the same as leaving a field out. JSON, application/x-www-form-urlencoded or multipart/form-data.",
  },
);
export type SendBody = typeof SendBody.static;

export const SendResult = t.Object({
  id: t.String({ description: "the message id (the queue id: in the SMTP reply, the log lines, GET /v1/messages/{id} and every event's message_id)" }),
  message_id: t.Union([t.String(), t.Null()], { description: "the RFC 5322 Message-ID header of the message, with its angle brackets" }),
  recipients: t.Array(
    t.Object({
      address: t.String(),
      id: t.String({ description: "the recipient's delivery id" }),
      status: t.Union([t.Literal("queued"), t.Literal("suppressed")]),
    }),
  ),
});
export type SendResult = typeof SendResult.static;
