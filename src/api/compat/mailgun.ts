/**
 * @module api/compat/mailgun — Mailgun's `POST /v3/{domain}/messages` and `/v3/{domain}/messages.mime` (HTTP Basic
 * `api:KEY`): the form's parameters are turned into the fields of POST /v1/send and sent through the same
 * SendService; answers and errors come back in Mailgun's shape (`{"id", "message"}`, `{"message"}`).
 */
import { Elysia, t, type TSchema } from "elysia";
import { BadDomainError, parseSenderDomain } from "../../auth/users.ts";
import { domainAllowed } from "../../intake/policy.ts";
import type { Logger } from "../../observe/log.ts";
import type { ApiContext } from "../context.ts";
import type { SendBody } from "../send/model.ts";
import { multipartEntries, type FormEntry } from "../send/multipart.ts";
import { bodyBytes, bodyKind, type BodyKind } from "../send/read.ts";
import { dialectView, fieldParts, type Dialect, type FieldNamer } from "./dialect.ts";

type Status = 400 | 401 | 403 | 404 | 405 | 413 | 429 | 500 | 503;

/** A refusal already in Mailgun's terms. */
export class MailgunError extends Error {
  constructor(
    readonly status: Status,
    message: string,
  ) {
    super(message);
  }
}

const bad = (message: string) => new MailgunError(400, message);

/** Which endpoint: `messages` takes the message's parts, `messages.mime` a whole MIME message. */
export type Endpoint = "messages" | "mime";

/** The form → the fields of POST /v1/send, and how to name a send-path field the way the form wrote it. */
export interface MailgunSubmission {
  fields: SendBody;
  name: FieldNamer;
}

const YES = new Set(["yes", "true"]);
const NO = new Set(["no", "false"]);
const SINGLE: Record<string, "from" | "subject" | "text" | "html"> = { from: "from", subject: "subject", text: "text", html: "html" };

/** The form's entries, in order → the send fields. Every parameter is used, or refused naming it. */
export async function toSendFields(entries: readonly FormEntry[], endpoint: Endpoint): Promise<MailgunSubmission> {
  const form = new MailgunForm(endpoint);
  for (const [name, value] of entries) await form.take(name, value);
  return form.submission();
}

const text = (name: string, v: string | File): string => {
  if (typeof v !== "string") throw bad(`'${name}' must be a text parameter, not a file`);
  return v;
};

const once = (name: string, seen: boolean) => {
  if (seen) throw bad(`'${name}' parameter is given more than once`);
};

/** The parameters read so far; `submission()` checks what is required and gives the send fields. */
class MailgunForm {
  private single: Partial<Record<"from" | "subject" | "text" | "html" | "reply_to", string>> = {};
  private lists = { to: [] as string[], cc: [] as string[], bcc: [] as string[], tags: [] as string[] };
  private headers: { name: string; value: string }[] = [];
  private attachments: NonNullable<SendBody["attachments"]> = [];
  /** "attachment" or "inline", by attachment index: how an error names one */
  private attachmentParams: string[] = [];
  private metadata: Record<string, string> = {};
  private tracking: { all?: boolean; clicks?: boolean; opens?: boolean } = {};
  private message: string | File | undefined;

  constructor(private endpoint: Endpoint) {}

  async take(name: string, value: string | File): Promise<void> {
    const lower = name.toLowerCase();
    const mime = this.endpoint === "mime";
    if (lower in SINGLE && (!mime || lower === "from")) {
      once(name, this.single[SINGLE[lower]!] !== undefined);
      this.single[SINGLE[lower]!] = text(name, value);
    } else if (lower === "to" || (!mime && (lower === "cc" || lower === "bcc"))) {
      this.lists[lower as "to" | "cc" | "bcc"].push(text(name, value));
    } else if ((lower === "attachment" || lower === "inline") && !mime) {
      if (typeof value === "string") fileRequired(name);
      this.attachments.push(lower === "inline" ? await inlinePart(value) : value);
      this.attachmentParams.push(lower);
    } else if (lower === "message" && mime) {
      once(name, this.message !== undefined);
      this.message = value;
    } else if (lower.startsWith("h:") && !mime) {
      this.header(name, text(name, value));
    } else if (lower.startsWith("v:")) {
      once(name, name.slice(2) in this.metadata);
      this.metadata[name.slice(2)] = text(name, value);
    } else if (lower.startsWith("o:")) {
      this.option(name, lower, text(name, value));
    } else {
      throw bad(mime ? notForMime(name, lower) : `'${name}' parameter is not supported by outpost`);
    }
  }

  private header(name: string, value: string): void {
    if (name.slice(2).toLowerCase() !== "reply-to") {
      this.headers.push({ name: name.slice(2), value });
      return;
    }
    once(name, this.single.reply_to !== undefined);
    this.single.reply_to = value;
  }

  private option(name: string, lower: string, value: string): void {
    if (lower === "o:tag") {
      this.lists.tags.push(value);
    } else if (lower === "o:tracking" || lower === "o:tracking-clicks" || lower === "o:tracking-opens") {
      const which = lower === "o:tracking" ? "all" : lower === "o:tracking-clicks" ? "clicks" : "opens";
      once(name, this.tracking[which] !== undefined);
      this.tracking[which] = yesNo(name, value, which === "clicks");
    } else if (lower === "o:testmode") {
      if (!NO.has(value.trim().toLowerCase())) {
        throw bad("'o:testmode' is not supported: outpost has no per-message test mode (the operator's delivery.sandbox sends nothing for everyone)");
      }
    } else {
      throw bad(`'${name}' parameter is not supported by outpost`);
    }
  }

  submission(): MailgunSubmission {
    const { to, cc, bcc, tags } = this.lists;
    if (this.single.from === undefined && this.endpoint === "messages") throw bad("'from' parameter is missing");
    if (to.length === 0) throw bad("'to' parameter is missing");
    if (this.endpoint === "mime" && this.message === undefined) throw bad("'message' parameter is missing");
    if (tags.length > 1) throw bad(`'o:tag' is given ${tags.length} times: outpost keeps one tag per message`);
    const f: SendBody = this.endpoint === "mime" ? this.mimeFields() : this.partFields();
    if (tags.length) f.tag = tags[0];
    if (Object.keys(this.metadata).length) f.metadata = this.metadata;
    const clicks = this.tracking.clicks ?? this.tracking.all;
    const opens = this.tracking.opens ?? this.tracking.all;
    if (clicks !== undefined) f.clicktracking = clicks;
    if (opens !== undefined) f.openstracking = opens;
    return { fields: f, name: namer(this.endpoint, this.headers, this.attachmentParams) };
  }

  private partFields(): SendBody {
    const f: SendBody = { ...this.single, to: this.lists.to };
    if (this.lists.cc.length) f.cc = this.lists.cc;
    if (this.lists.bcc.length) f.bcc = this.lists.bcc;
    if (this.headers.length) f.headers = this.headers;
    if (this.attachments.length) f.attachments = this.attachments;
    return f;
  }

  /** messages.mime: a `from` is the envelope sender; what the reader sees is the MIME message's own From. */
  private mimeFields(): SendBody {
    const f: SendBody = { recipient: this.lists.to, body: this.message };
    if (this.single.from !== undefined) f.envelope = this.single.from;
    return f;
  }
}

/** Why a parameter of the parts endpoint is no messages.mime parameter. */
function notForMime(name: string, lower: string): string {
  const where =
    lower === "cc" || lower === "bcc" ? "recipients are given by 'to'" :
    lower.startsWith("h:") ? "header fields belong in the MIME message" :
    lower === "attachment" || lower === "inline" ? "attachments belong in the MIME message" :
    lower in SINGLE ? `the message's ${lower === "subject" ? "Subject" : "parts"} belong in the MIME message` : null;
  return where ? `'${name}' is not a messages.mime parameter: ${where}` : `'${name}' parameter is not supported by outpost`;
}

function fileRequired(name: string): never {
  throw bad(`'${name}' must be a file: send the request as multipart/form-data`);
}

/**
 * An `inline` file: Mailgun gives it its file name as Content-ID, so the HTML refers to it as cid:NAME. A file
 * part cannot carry a Content-ID through the send fields, so it goes as an attachment object (base64).
 */
async function inlinePart(file: File): Promise<NonNullable<SendBody["attachments"]>[number]> {
  const content = Buffer.from(await file.arrayBuffer()).toString("base64");
  return { filename: file.name, content, content_type: file.type || undefined, cid: file.name };
}

/**
 * Mailgun's yes/no ("true"/"false" too). For clicks, "htmlonly" is what outpost does anyway: it tracks links in
 * HTML parts only, so "yes" (HTML and text on Mailgun) leaves text parts as written.
 */
function yesNo(name: string, value: string, clicks: boolean): boolean {
  const v = value.trim().toLowerCase();
  if (YES.has(v) || (clicks && v === "htmlonly")) return true;
  if (NO.has(v)) return false;
  throw bad(`'${name}' must be yes or no${clicks ? " or htmlonly" : ""}, not ${JSON.stringify(value)}`);
}

/** The send path's field names → the form's parameters, for errors. */
function namer(endpoint: Endpoint, headers: { name: string }[], attachmentParams: string[]): FieldNamer {
  return (field) => {
    const { head, index, rest } = fieldParts(field);
    switch (head) {
      case "envelope":
        return "from";
      case "from":
        return endpoint === "mime" ? "message" : "from";
      case "recipient":
      case "to":
      case "cc":
      case "bcc":
        return head === "recipient" ? "to" : head; // one parameter, however often repeated
      case "body":
        return "message";
      case "reply_to":
        return "h:Reply-To";
      case "tag":
        return "o:tag";
      case "metadata":
        return rest ? `v:${rest}` : "v:";
      case "clicktracking":
        return "o:tracking-clicks";
      case "openstracking":
        return "o:tracking-opens";
      case "headers":
        return index !== null && headers[index] ? `h:${headers[index]!.name}` : "h:";
      case "attachments":
        return index !== null && attachmentParams[index] ? `${attachmentParams[index]}[${attachmentParams.slice(0, index).filter((p) => p === attachmentParams[index]).length}]` : "attachment";
      default:
        return endpoint === "mime" && head !== "to" ? "message" : field;
    }
  };
}

/** Any error of a Mailgun route in Mailgun's terms: the HTTP status kept, the text with the form's names. */
export function asMailgunError(error: unknown, elysiaCode: string | number, log: Logger, name: FieldNamer = (f) => f): MailgunError {
  const inner = elysiaCode === "PARSE" && error instanceof Error && error.cause ? error.cause : error;
  if (inner instanceof MailgunError) return inner;
  const v = dialectView(inner, elysiaCode, log, name);
  const message = v.shownField ? `'${v.shownField}' ${v.text}` : v.message;
  const status = ([400, 401, 403, 404, 405, 413, 429, 503] as const).find((s) => s === v.status) ?? (v.status === 415 ? 400 : 500);
  return new MailgunError(status, message);
}

function answer(e: MailgunError): Response {
  // Mailgun answers a wrong key with the bare word, and its clients show that text as the error's details
  if (e.status === 401) return new Response("Forbidden", { status: 401, headers: { "content-type": "text/plain; charset=utf-8" } });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (e.status === 429 || e.status === 503) headers["retry-after"] = "1";
  return new Response(JSON.stringify({ message: e.message }), { status: e.status, headers });
}

/** HTTP Basic with user "api" and the key as password, as Mailgun's clients send it. */
function basicKey(request: Request): string | null {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(request.headers.get("authorization") ?? "");
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0 || decoded.slice(0, colon) !== "api") return null;
  return decoded.slice(colon + 1) || null;
}

export const mailgunDialect: Dialect = {
  name: "mailgun",
  owns: (path) => path.startsWith("/v3/"),
  key: basicKey,
  missingKey: "HTTP Basic authentication is required: user api, the outpost API key as password",
  errorResponse: (error, code, log) => answer(asMailgunError(error, code, log)),
};

/** A form (multipart or urlencoded), read as entries in order. */
async function readForm(request: Request, limits: Record<BodyKind, number>): Promise<FormEntry[]> {
  const contentType = request.headers.get("content-type");
  const kind = bodyKind(contentType);
  if (kind !== "multipart" && kind !== "urlencoded") throw bad("send the message as multipart/form-data or application/x-www-form-urlencoded");
  const bytes = await bodyBytes(request, limits[kind]);
  if (kind === "urlencoded") return [...new URLSearchParams(bytes.toString("utf8")).entries()];
  try {
    return await multipartEntries(contentType!, bytes);
  } catch (e) {
    throw bad(`malformed multipart body: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The path's domain, if the key's user may send for it (any, for a user without sender domains). */
function sendingDomain(ctx: ApiContext, request: Request, raw: string): void {
  let domain: string;
  try {
    domain = parseSenderDomain(decodeURIComponent(raw));
  } catch (e) {
    if (e instanceof BadDomainError || e instanceof URIError) throw new MailgunError(404, `Domain not found: ${raw}`);
    throw e;
  }
  const allowed = ctx.auth.principalOf(request).allowedDomains;
  if (allowed.length > 0 && !domainAllowed(allowed, domain)) {
    throw new MailgunError(403, `Domain ${domain} is not allowed to send: it is not one of your sender domains (${allowed.join(", ")})`);
  }
}

async function send(ctx: ApiContext, request: Request, ip: string | null, entries: FormEntry[], endpoint: Endpoint) {
  const who = ctx.auth.principalOf(request);
  let mg: MailgunSubmission | null = null;
  try {
    mg = await toSendFields(entries, endpoint);
    const out = await ctx.sender.send(who, mg.fields, null, ip);
    // as POST /v1/send logs it, with the door it came by
    ctx.log.info("api_message", {
      api: "mailgun", queue_id: out.result.id, message_id: out.result.messageIdHeader, client_ip: ip, user: who.userName,
      key: who.keyId.slice(0, 12), sender: out.envelope, recipients: out.result.recipients.map((r) => r.address), replayed: out.replayed,
    });
    // intake gives every message a Message-ID; Mailgun's id is that field's value, angle brackets and all
    return { id: out.result.messageIdHeader ?? "", message: "Queued. Thank you." };
  } catch (e) {
    throw asMailgunError(e, "UNKNOWN", ctx.log, mg?.name);
  }
}

export const MailgunAnswer = t.Object({
  id: t.String({ description: "the message's Message-ID, in angle brackets" }),
  message: t.String({ description: "Queued. Thank you." }),
});
export const MailgunErrorBody = t.Object({ message: t.String() }, { description: "Mailgun's error shape (a wrong key is answered 401 with the text Forbidden)" });

const Form = t.Object(
  {
    from: t.String({ description: "→ from, and the envelope sender" }),
    to: t.Union([t.String(), t.Array(t.String())], { description: "→ to: repeat it or separate addresses with commas" }),
    cc: t.Optional(t.Union([t.String(), t.Array(t.String())], { description: "→ cc" })),
    bcc: t.Optional(t.Union([t.String(), t.Array(t.String())], { description: "→ bcc" })),
    subject: t.Optional(t.String({ description: "→ subject" })),
    text: t.Optional(t.String({ description: "→ text" })),
    html: t.Optional(t.String({ description: "→ html" })),
    attachment: t.Optional(t.Array(t.File(), { description: "→ attachments (file parts)" })),
    inline: t.Optional(t.Array(t.File(), { description: "→ attachments with cid = the file name" })),
    "o:tag": t.Optional(t.String({ description: "→ tag (one; a second is refused)" })),
    "o:tracking": t.Optional(t.String({ description: "yes/no: both o:tracking-clicks and o:tracking-opens, where those are not given" })),
    "o:tracking-clicks": t.Optional(t.String({ description: "yes/no/htmlonly → clicktracking (HTML parts only either way)" })),
    "o:tracking-opens": t.Optional(t.String({ description: "yes/no → openstracking" })),
    "o:testmode": t.Optional(t.String({ description: "no only: a test mode is refused" })),
    "h:X-My-Header": t.Optional(t.String({ description: "h:NAME → a header field NAME; h:Reply-To → reply_to" })),
    "v:my-var": t.Optional(t.String({ description: "v:KEY → metadata KEY" })),
  },
  { description: "Mailgun's parameters; any other is refused (400 naming it)" },
);
const MimeForm = t.Object({
  to: t.Union([t.String(), t.Array(t.String())], { description: "→ recipient: who gets it (the message's own To/Cc are not read)" }),
  message: t.File({ description: "→ body: the whole MIME message (a file part, or a text field)" }),
  from: t.Optional(t.String({ description: "→ envelope; default: the message's Sender or From" })),
  "o:tag": t.Optional(t.String()),
  "o:tracking": t.Optional(t.String()),
  "o:tracking-clicks": t.Optional(t.String()),
  "o:tracking-opens": t.Optional(t.String()),
  "v:my-var": t.Optional(t.String()),
});

const formBody = (schema: TSchema) => ({
  required: true,
  content: { "multipart/form-data": { schema }, "application/x-www-form-urlencoded": { schema } },
});

const route = (ctx: ApiContext, endpoint: Endpoint) =>
  async ({ body, params, request, server }: { body: unknown; params: { domain: string }; request: Request; server: { requestIP(r: Request): { address: string } | null } | null }) => {
    sendingDomain(ctx, request, params.domain);
    return await send(ctx, request, server?.requestIP(request)?.address ?? null, body as FormEntry[], endpoint);
  };

export function mailgunRoutes(ctx: ApiContext) {
  const responses = { 200: MailgunAnswer, 400: MailgunErrorBody, 401: t.String({ description: "Forbidden" }), 403: MailgunErrorBody, 413: MailgunErrorBody, 429: MailgunErrorBody, 503: MailgunErrorBody };
  const params = t.Object({ domain: t.String({ description: "a sending domain: one of the key's user's sender domains (any, for a user without)" }) });
  const security = [{ mailgun: [] }];
  return new Elysia()
    .post("/v3/:domain/messages", route(ctx, "messages"), {
      parse: ({ request }) => readForm(request, ctx.maxRequestBytes),
      params,
      response: responses,
      detail: {
        tags: ["mailgun"],
        summary: "Send a message (Mailgun's API)",
        description: "Mailgun's POST /v3/{domain}/messages: point a Mailgun client at outpost's base URL, with user api and an outpost API key. The message takes the same path as POST /v1/send.",
        security,
        requestBody: formBody(Form),
      },
    })
    .post("/v3/:domain/messages.mime", route(ctx, "mime"), {
      parse: ({ request }) => readForm(request, ctx.maxRequestBytes),
      params,
      response: responses,
      detail: {
        tags: ["mailgun"],
        summary: "Send a MIME message (Mailgun's API)",
        description: "Mailgun's POST /v3/{domain}/messages.mime: the whole message in `message`, its recipients in `to`.",
        security,
        requestBody: formBody(MimeForm),
      },
    });
}
