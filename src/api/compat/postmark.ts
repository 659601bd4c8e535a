/**
 * @module api/compat/postmark — Postmark's `POST /email` and `POST /email/batch` (key in X-Postmark-Server-Token):
 * each Postmark message is turned into the fields of POST /v1/send and sent through the same SendService, so
 * it meets the same checks and intake; answers and errors come back in Postmark's shape.
 */
import { Elysia, t, type TSchema } from "elysia";
import type { Logger } from "../../observe/log.ts";
import type { Principal } from "../auth.ts";
import type { ApiContext } from "../context.ts";
import type { SendBody } from "../send/model.ts";
import { bodyBytes, bodyKind } from "../send/read.ts";
import { dialectView, fieldParts, type Dialect } from "./dialect.ts";

export const TOKEN_HEADER = "X-Postmark-Server-Token";
/** Postmark's own limit for one batch call */
export const BATCH_MAX = 500;

/** The Postmark API error codes outpost answers with (Postmark's API reference, "API error codes"). */
export const ERROR_CODE = {
  badToken: 10,
  maintenance: 100,
  invalidRequest: 300,
  senderNotAllowed: 400,
  invalidJson: 402,
  inactiveRecipient: 406,
  jsonRequired: 409,
  tooManyBatchMessages: 410,
  rateLimited: 429,
} as const;

type Status = 401 | 404 | 405 | 413 | 422 | 429 | 500 | 503;

/** A refusal already in Postmark's terms: HTTP status, ErrorCode and Message. */
export class PostmarkError extends Error {
  constructor(
    readonly status: Status,
    readonly errorCode: number,
    message: string,
  ) {
    super(message);
  }
}

const invalid = (message: string) => new PostmarkError(422, ERROR_CODE.invalidRequest, message);

/** Postmark's field names; the API reads them case-insensitively, as Postmark does. */
const FIELDS = [
  "From", "To", "Cc", "Bcc", "Subject", "HtmlBody", "TextBody", "ReplyTo", "Headers", "Attachments", "Tag", "Metadata",
  "TrackOpens", "TrackLinks", "MessageStream",
] as const;
type Field = (typeof FIELDS)[number];
const FIELD_BY_LOWER = new Map<string, Field>(FIELDS.map((f) => [f.toLowerCase(), f]));

const ATTACHMENT_KEYS: Record<string, string> = { name: "filename", content: "content", contenttype: "content_type", contentid: "cid" };

/** The metadata key MessageStream is kept under (outpost has one stream: it changes nothing else). */
export const STREAM_METADATA_KEY = "message_stream";

/** One Postmark message, as outpost takes it: the native fields, and what the answer echoes. */
export interface PostmarkSubmission {
  fields: SendBody;
  /** the To field as given: Postmark's answer repeats it */
  to: string;
}

/**
 * A Postmark message (parsed JSON) → the fields of POST /v1/send. Type and name errors are answered here, in
 * Postmark's words; the meaning (addresses, header names, base64, sender domains) is checked by the send path.
 */
export function toSendFields(message: unknown): PostmarkSubmission {
  if (message === null || typeof message !== "object" || Array.isArray(message)) throw invalid("a message must be a JSON object");
  const m = new Map<Field, unknown>();
  for (const [name, value] of Object.entries(message)) {
    const field = FIELD_BY_LOWER.get(name.toLowerCase());
    if (!field) throw invalid(`unknown field '${name}'; outpost takes ${FIELDS.join(", ")}`);
    if (m.has(field)) throw invalid(`field '${field}' is given more than once`);
    if (value !== null) m.set(field, value); // Postmark's own clients send unset fields as null
  }
  const str = (f: Field): string | undefined => {
    const v = m.get(f);
    if (v !== undefined && typeof v !== "string") throw invalid(`'${f}' must be a string`);
    return v;
  };
  const from = str("From");
  if (from === undefined || from.trim() === "") throw invalid("'From' is required: the sender address, as \"Name <sender@example.com>\" or sender@example.com");
  const [to, cc, bcc] = [str("To"), str("Cc"), str("Bcc")];
  if ([to, cc, bcc].every((v) => v === undefined || v.trim() === "")) throw invalid("no recipient: give 'To', 'Cc' or 'Bcc'");
  const fields: SendBody = { from };
  const set = <K extends keyof SendBody>(k: K, v: SendBody[K] | undefined) => {
    if (v !== undefined) fields[k] = v;
  };
  set("to", nonEmpty(to));
  set("cc", nonEmpty(cc));
  set("bcc", nonEmpty(bcc));
  set("subject", str("Subject"));
  set("html", str("HtmlBody"));
  set("text", str("TextBody"));
  set("reply_to", nonEmpty(str("ReplyTo")));
  set("tag", str("Tag"));
  set("headers", headersOf(m.get("Headers")));
  set("attachments", attachmentsOf(m.get("Attachments")));
  set("metadata", metadataOf(m.get("Metadata"), str("MessageStream")));
  set("openstracking", trackOpens(m.get("TrackOpens")));
  set("clicktracking", trackLinks(str("TrackLinks")));
  return { fields, to: to ?? "" };
}

/** Postmark clients send "" for an unset address list. */
const nonEmpty = (v: string | undefined) => (v === undefined || v.trim() === "" ? undefined : v);

function headersOf(v: unknown): SendBody["headers"] {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw invalid("'Headers' must be a list of {\"Name\": …, \"Value\": …}");
  return v.map((h: unknown, i) => {
    const o = h !== null && typeof h === "object" && !Array.isArray(h) ? (h as Record<string, unknown>) : null;
    const name = o?.Name ?? o?.name;
    const value = o?.Value ?? o?.value;
    if (typeof name !== "string" || typeof value !== "string" || Object.keys(o!).length !== 2) {
      throw invalid(`'Headers[${i}]' must be {"Name": "…", "Value": "…"}`);
    }
    return { name, value };
  });
}

function attachmentsOf(v: unknown): SendBody["attachments"] {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw invalid("'Attachments' must be a list of {\"Name\", \"Content\", \"ContentType\", \"ContentID\"}");
  return v.map((a: unknown, i) => {
    if (a === null || typeof a !== "object" || Array.isArray(a)) throw invalid(`'Attachments[${i}]' must be an object`);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(a)) {
      const key = ATTACHMENT_KEYS[k.toLowerCase()];
      if (!key) throw invalid(`unknown field 'Attachments[${i}].${k}'; outpost takes Name, Content, ContentType, ContentID`);
      if (val === null) continue;
      if (typeof val !== "string") throw invalid(`'Attachments[${i}].${k}' must be a string`);
      // Postmark writes the Content-ID as the HTML refers to it, "cid:logo.png"
      out[key] = key === "cid" ? val.replace(/^cid:/i, "") : val;
    }
    if (out.content === undefined) throw invalid(`'Attachments[${i}].Content' is required: the file's bytes, base64`);
    return { content: out.content, filename: out.filename, content_type: out.content_type, cid: out.cid || undefined };
  });
}

/** Postmark's Metadata, with MessageStream kept beside it. Numbers and booleans are kept as their text. */
function metadataOf(v: unknown, stream: string | undefined): Record<string, string> | undefined {
  if (v !== undefined && (typeof v !== "object" || Array.isArray(v))) throw invalid("'Metadata' must be an object of strings");
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries((v ?? {}) as Record<string, unknown>)) {
    if (typeof val === "string") out[k] = val;
    else if (typeof val === "number" || typeof val === "boolean") out[k] = String(val);
    else throw invalid(`'Metadata.${k}' must be a string`);
  }
  if (stream !== undefined && stream.trim() !== "") {
    if (STREAM_METADATA_KEY in out) throw invalid(`'Metadata.${STREAM_METADATA_KEY}' is where outpost keeps MessageStream: give one of the two`);
    out[STREAM_METADATA_KEY] = stream.trim();
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function trackOpens(v: unknown): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw invalid("'TrackOpens' must be true or false");
  return v;
}

/**
 * outpost rewrites links in HTML parts only: "HtmlOnly" is exactly that, "HtmlAndText" is taken as it (links in a
 * text part go out as written), and "TextOnly", which would track nothing outpost can track, is refused.
 */
function trackLinks(v: string | undefined): boolean | undefined {
  switch (v) {
    case undefined:
      return undefined;
    case "None":
      return false;
    case "HtmlOnly":
    case "HtmlAndText":
      return true;
    case "TextOnly":
      throw invalid("'TrackLinks' TextOnly is not supported: outpost tracks links in HTML parts only (use HtmlOnly, HtmlAndText or None)");
    default:
      throw invalid(`'TrackLinks' must be None, HtmlAndText, HtmlOnly or TextOnly, not ${JSON.stringify(v)}`);
  }
}

/** The send path's field names → Postmark's, for errors. */
const NATIVE_TO_POSTMARK: Record<string, string> = {
  envelope: "From", from: "From", recipient: "To", to: "To", cc: "Cc", bcc: "Bcc", subject: "Subject", html: "HtmlBody",
  text: "TextBody", reply_to: "ReplyTo", headers: "Headers", attachments: "Attachments", tag: "Tag", metadata: "Metadata",
  openstracking: "TrackOpens", clicktracking: "TrackLinks", body: "HtmlBody",
};
const ATTACHMENT_TO_POSTMARK: Record<string, string> = { filename: "Name", content: "Content", content_type: "ContentType", cid: "ContentID" };

export function postmarkField(field: string): string {
  const { head, index, rest } = fieldParts(field);
  const name = NATIVE_TO_POSTMARK[head] ?? head;
  const at = index === null ? "" : `[${index}]`;
  if (!rest) return name + at;
  return `${name}${at}.${head === "attachments" ? (ATTACHMENT_TO_POSTMARK[rest] ?? rest) : rest}`;
}

/** Any error of a Postmark route in Postmark's terms. */
export function asPostmarkError(error: unknown, elysiaCode: string | number, log: Logger): PostmarkError {
  const inner = elysiaCode === "PARSE" && error instanceof Error && error.cause ? error.cause : error;
  if (inner instanceof PostmarkError) return inner;
  const v = dialectView(inner, elysiaCode, log, postmarkField);
  const message = v.shownField ? `Invalid '${v.shownField}': ${v.text}` : v.message;
  switch (v.status) {
    case 400:
      return new PostmarkError(422, ERROR_CODE.invalidRequest, message);
    case 401:
      return new PostmarkError(401, ERROR_CODE.badToken, message);
    case 403:
      // a sender outside the user's domains: Postmark's "not a confirmed Sender Signature"
      return new PostmarkError(422, ERROR_CODE.senderNotAllowed, message);
    case 429:
      return new PostmarkError(429, ERROR_CODE.rateLimited, message);
    case 503:
      return new PostmarkError(503, ERROR_CODE.maintenance, message);
    case 404:
    case 405:
    case 413:
      return new PostmarkError(v.status, v.status, message);
    default:
      return new PostmarkError(500, 500, message);
  }
}

function answer(e: PostmarkError): Response {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (e.status === 429 || e.status === 503) headers["retry-after"] = "1";
  return new Response(JSON.stringify({ ErrorCode: e.errorCode, Message: e.message }), { status: e.status, headers });
}

export const postmarkDialect: Dialect = {
  name: "postmark",
  owns: (path) => path === "/email" || path.startsWith("/email/"),
  key: (request) => request.headers.get(TOKEN_HEADER)?.trim() || null,
  missingKey: `no server token: send an outpost API key in the ${TOKEN_HEADER} header`,
  errorResponse: (error, code, log) => answer(asPostmarkError(error, code, log)),
};

/** JSON only, as Postmark: anything else is its "JSON required", unreadable JSON its "Invalid JSON". */
async function readJson(request: Request, max: number): Promise<unknown> {
  if (bodyKind(request.headers.get("content-type")) !== "json") {
    throw new PostmarkError(422, ERROR_CODE.jsonRequired, "JSON required: send the message as Content-Type: application/json");
  }
  const text = (await bodyBytes(request, max)).toString("utf8");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PostmarkError(422, ERROR_CODE.invalidJson, `Invalid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** What one accepted message is answered with, in Postmark's shape. */
interface Sent {
  To: string;
  SubmittedAt: string;
  MessageID: string;
  ErrorCode: number;
  Message: string;
}

/**
 * Sends one Postmark message. Recipients on the suppression list are Postmark's "inactive" ones: when every
 * recipient is, the answer is Postmark's 406 (the message is still recorded, with its recipients suppressed).
 */
async function sendOne(ctx: ApiContext, who: Principal, message: unknown, ip: string | null): Promise<Sent> {
  const pm = toSendFields(message);
  const out = await ctx.sender.send(who, pm.fields, null, ip);
  // as POST /v1/send logs it, with the door it came by
  ctx.log.info("api_message", {
    api: "postmark", queue_id: out.result.id, message_id: out.result.messageIdHeader, client_ip: ip, user: who.userName,
    key: who.keyId.slice(0, 12), sender: out.envelope, recipients: out.result.recipients.map((r) => r.address), replayed: out.replayed,
  });
  const inactive = out.result.recipients.filter((r) => r.status === "suppressed").map((r) => r.address);
  if (inactive.length === out.result.recipients.length) {
    throw new PostmarkError(422, ERROR_CODE.inactiveRecipient,
      `You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: ${inactive.join(", ")}. ` +
        "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression.");
  }
  return {
    To: pm.to,
    SubmittedAt: new Date().toISOString(),
    MessageID: out.result.id,
    ErrorCode: 0,
    Message: inactive.length ? `Message OK, but will not deliver to these inactive addresses: ${inactive.join(", ")}.` : "OK",
  };
}

const clientIp = (server: { requestIP(r: Request): { address: string } | null } | null, request: Request) =>
  server?.requestIP(request)?.address ?? null;

const Attachment = t.Object({
  Name: t.String({ description: "file name → filename" }),
  Content: t.String({ description: "the bytes, base64 → content" }),
  ContentType: t.Optional(t.String({ description: "→ content_type; guessed from Name when omitted" })),
  ContentID: t.Optional(t.Union([t.String(), t.Null()], { description: "\"cid:logo.png\" or \"logo.png\" → cid: an inline part the HTML shows as cid:logo.png" })),
});

export const PostmarkMessage = t.Object(
  {
    From: t.String({ description: "→ from, and the envelope sender: \"Name <sender@example.com>\"" }),
    To: t.Optional(t.String({ description: "→ to: comma-separated, display names allowed" })),
    Cc: t.Optional(t.String({ description: "→ cc" })),
    Bcc: t.Optional(t.String({ description: "→ bcc (never written into the message)" })),
    Subject: t.Optional(t.String({ description: "→ subject" })),
    HtmlBody: t.Optional(t.String({ description: "→ html" })),
    TextBody: t.Optional(t.String({ description: "→ text" })),
    ReplyTo: t.Optional(t.String({ description: "→ reply_to" })),
    Headers: t.Optional(t.Array(t.Object({ Name: t.String(), Value: t.String() }), { description: "→ headers" })),
    Attachments: t.Optional(t.Array(Attachment, { description: "→ attachments" })),
    Tag: t.Optional(t.String({ description: "→ tag" })),
    Metadata: t.Optional(t.Record(t.String(), t.String(), { description: "→ metadata" })),
    TrackOpens: t.Optional(t.Boolean({ description: "→ openstracking" })),
    TrackLinks: t.Optional(
      t.Union([t.Literal("None"), t.Literal("HtmlAndText"), t.Literal("HtmlOnly")], {
        description: "→ clicktracking: None = false; HtmlOnly and HtmlAndText = true (links in HTML parts; text parts go out as written); TextOnly is refused",
      }),
    ),
    MessageStream: t.Optional(t.String({ description: `recorded as metadata ${STREAM_METADATA_KEY}; no other effect (outpost has one stream)` })),
  },
  { description: "a Postmark message; field names are case-insensitive and null is an omitted field" },
);

const Answer = t.Object({
  To: t.String({ description: "the To field as given" }),
  SubmittedAt: t.String({ format: "date-time" }),
  MessageID: t.String({ description: "outpost's message id (GET /v1/messages/{id})" }),
  ErrorCode: t.Integer({ description: "0" }),
  Message: t.String({ description: "OK, or which recipients are suppressed (inactive) and not sent to" }),
});
const BatchItem = t.Union([Answer, t.Object({ ErrorCode: t.Integer(), Message: t.String() })]);
export const PostmarkErrorBody = t.Object(
  {
    ErrorCode: t.Integer({
      description:
        "10 bad or missing token (401); 300 invalid message, 400 sender not in your sender domains, 402 invalid JSON, 406 every recipient inactive (suppressed), 409 JSON required, 410 over 500 messages in a batch (422); 429 rate limit (429); 100 store unavailable (503); otherwise the HTTP status",
    }),
    Message: t.String(),
  },
  { description: "Postmark's error shape" },
);

const jsonBody = (schema: TSchema) => ({ required: true, content: { "application/json": { schema } } });
const security = [{ postmark: [] }];

export function postmarkRoutes(ctx: ApiContext) {
  return new Elysia()
    .post(
      "/email",
      async ({ body, request, server }) => await sendOne(ctx, ctx.auth.principalOf(request), body, clientIp(server, request)),
      {
        parse: ({ request }) => readJson(request, ctx.maxRequestBytes.json),
        response: { 200: Answer, 401: PostmarkErrorBody, 422: PostmarkErrorBody, 429: PostmarkErrorBody, 503: PostmarkErrorBody },
        detail: {
          tags: ["postmark"],
          summary: "Send a message (Postmark's API)",
          description: `Postmark's POST /email: point a Postmark client at outpost's base URL and send an outpost API key as ${TOKEN_HEADER}. The message takes the same path as POST /v1/send.`,
          security,
          requestBody: jsonBody(PostmarkMessage),
        },
      },
    )
    .post(
      "/email/batch",
      async ({ body, request, server }) => {
        if (!Array.isArray(body)) throw invalid("a batch is a JSON array of messages");
        if (body.length > BATCH_MAX) {
          throw new PostmarkError(422, ERROR_CODE.tooManyBatchMessages, `a batch holds at most ${BATCH_MAX} messages, this one ${body.length}`);
        }
        const who = ctx.auth.principalOf(request);
        const ip = clientIp(server, request);
        // concurrently, so the messages share the group commit; each answer in its message's place
        return await Promise.all(
          body.map((message: unknown) =>
            sendOne(ctx, who, message, ip).catch((e: unknown) => {
              const pe = asPostmarkError(e, "UNKNOWN", ctx.log);
              ctx.counters.error(pe.status);
              return { ErrorCode: pe.errorCode, Message: pe.message };
            }),
          ),
        );
      },
      {
        parse: ({ request }) => readJson(request, ctx.maxRequestBytes.json),
        response: { 200: t.Array(BatchItem), 401: PostmarkErrorBody, 422: PostmarkErrorBody, 429: PostmarkErrorBody, 503: PostmarkErrorBody },
        detail: {
          tags: ["postmark"],
          summary: "Send up to 500 messages (Postmark's API)",
          description: "Postmark's POST /email/batch: an array of messages, answered 200 with one answer per message in order; a message that is refused gets its ErrorCode and Message in its place.",
          security,
          requestBody: jsonBody(t.Array(PostmarkMessage, { maxItems: BATCH_MAX })),
        },
      },
    );
}
