/**
 * @module api/send/normalize — checks the meaning of validated send fields and turns them into what intake
 * takes: envelope, recipients, MIME bytes (given, or composed from structured fields) and message options.
 */
import addressparser from "nodemailer/lib/addressparser";
import { parseAddress } from "../../mail/address.ts";
import { ApiError } from "../../mail/errors.ts";
import { composeMessage, RESERVED_HEADERS, type ComposeAttachment, type ComposeInput, type Mailbox } from "../../message/compose.ts";
import { BadLineEndingError, fieldValue, type SplitMessage } from "../../message/headers.ts";
import { readMessage, type ReadMessage } from "../../intake/prepare.ts";
import type { MessageOptions } from "../../queue/enqueue.ts";
import type { SendBody } from "./model.ts";

export interface SendRequest {
  envelopeFrom: string;
  recipients: string[];
  raw: Buffer;
  /** `raw` as intake reads it, when this request had to read it (a given MIME body): intake does not read it again */
  read?: ReadMessage;
  options: Partial<MessageOptions>;
  /** checked by intake (intake/labels.ts), as the X-Outpost-Tag/-Metadata-* headers are */
  tag?: string;
  metadata?: Record<string, string>;
}

const bad = (field: string, message: string) => new ApiError(400, "invalid_request", message, field);

const CONTROL = /[\r\n\0]/;

/** A field that ends up in a header or an SMTP command: CR, LF or NUL would let it inject more. */
function noControl(field: string, value: string): string {
  if (CONTROL.test(value)) throw bad(field, `${field} must not contain CR, LF or NUL`);
  return value;
}

/** Syntax and lengths as over SMTP (mail/address.ts); intake stores the canonical form. */
const isMailbox = (address: string): boolean => parseAddress(address).ok;

/** Addresses in a list field: each item may itself be a comma-separated list, with or without display names. */
export function mailboxesOf(field: string, value: string | string[] | undefined): Mailbox[] {
  if (value === undefined) return [];
  const items = Array.isArray(value) ? value : [value];
  const out: Mailbox[] = [];
  items.forEach((item, i) => {
    const name = Array.isArray(value) ? `${field}[${i}]` : field;
    noControl(name, item);
    const plain = item.trim();
    // the common case, one bare address, needs no parser
    if (isMailbox(plain)) {
      out.push({ address: plain });
      return;
    }
    for (const a of addressparser(item, { flatten: true })) {
      if (!isMailbox(a.address)) throw bad(name, `${name}: ${JSON.stringify(a.address || a.name || item)} is not a valid email address`);
      out.push(a.name ? { name: a.name, address: a.address } : { address: a.address });
    }
  });
  return out;
}

function flag(v: SendBody["inlinizecss"]): boolean | undefined {
  if (v === undefined) return undefined;
  return v === true || v === 1 || v === "true" || v === "1" || v === "yes" || v === "on";
}

export function optionsOf(b: SendBody): Partial<MessageOptions> {
  const o: Partial<MessageOptions> = {};
  const set = (k: keyof MessageOptions, v: boolean | undefined) => {
    if (v !== undefined) o[k] = v;
  };
  set("inlineCss", flag(b.inlinizecss));
  set("trackClicks", flag(b.clicktracking));
  set("trackOpens", flag(b.openstracking));
  set("trackBounces", flag(b.bouncetracking));
  set("unsubscribe", flag(b.unsubscribe));
  return o;
}

const STRUCTURED = ["from", "reply_to", "to", "cc", "bcc", "subject", "text", "html", "headers", "attachments"] as const;

/** Validated fields → a submission. `hostname` names composed messages' Message-IDs. */
export async function normalizeSend(b: SendBody, hostname: string): Promise<SendRequest> {
  const given = givenEnvelope(b.envelope);
  const explicit = mailboxesOf("recipient", b.recipient).map((m) => m.address);
  if (b.recipient !== undefined && explicit.length === 0) throw bad("recipient", "recipient is empty");

  let raw: Buffer;
  let read: ReadMessage | undefined;
  let recipients: string[];
  let envelopeFrom: string;
  if (b.body !== undefined) {
    const extra = STRUCTURED.find((f) => b[f] !== undefined);
    if (extra) throw bad(extra, `give either body (a MIME message) or structured fields, not both (${extra})`);
    raw = typeof b.body === "string" ? Buffer.from(b.body, "utf8") : Buffer.from(await b.body.arrayBuffer());
    if (raw.length === 0) throw bad("body", "body is empty");
    // checked even when the recipients are given: a body without headers is not a message
    read = readMimeBody(raw);
    envelopeFrom = given ?? authorOf(read.headers);
    recipients = explicit.length ? explicit : recipientsOf(read.headers);
  } else {
    const from = structuredFrom(b.from);
    envelopeFrom = given ?? from?.address ?? "";
    if (envelopeFrom === "") throw bad("from", "from (or envelope, the envelope sender) is required");
    const s = await structured(b, from ?? { address: envelopeFrom });
    if (!s.hasContent) throw bad("body", "give body (a MIME message) or structured fields (from, to, subject, text, html, attachments)");
    raw = await composeMessage(s.input, hostname);
    recipients = explicit.length ? explicit : [...s.input.to, ...s.input.cc, ...s.input.bcc].map((m) => m.address);
  }
  if (recipients.length === 0) {
    throw bad("recipient", "no recipient: give recipient, or To/Cc/Bcc addresses in the message");
  }
  return { envelopeFrom, recipients, raw, read, options: optionsOf(b), tag: b.tag, metadata: b.metadata };
}

/** The `envelope` field, checked; undefined when not given (or blank), so it defaults to the author. */
function givenEnvelope(value: string | undefined): string | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const envelope = noControl("envelope", value).trim();
  if (!isMailbox(envelope)) throw bad("envelope", `envelope: ${JSON.stringify(envelope)} is not a valid email address`);
  return envelope;
}

/**
 * The envelope sender a MIME body implies: its Sender (RFC 5322 §3.6.2: the one who sent it), else its one From
 * address. Several From addresses and no Sender name no one; nor does a message without either.
 */
function authorOf(headers: SplitMessage["headers"]): string {
  for (const name of ["sender", "from"]) {
    const addresses = addressesIn(headers, name);
    if (addresses.length === 0) continue;
    if (addresses.length > 1) {
      throw bad("envelope", `envelope is required: the body's From: has ${addresses.length} addresses and there is no Sender:`);
    }
    return addresses[0]!;
  }
  throw bad("envelope", "envelope (the envelope sender) is required: the body has no From: or Sender: address");
}

function structuredFrom(value: string | undefined): Mailbox | undefined {
  if (value === undefined) return undefined;
  const list = mailboxesOf("from", value);
  if (list.length !== 1) throw bad("from", "from must be exactly one address");
  return list[0];
}

/** The idempotency key from the field or the Idempotency-Key header, checked. */
export function idempotencyKeyOf(key: string | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (key.length === 0 || key.length > 255 || /[\x00-\x1f\x7f]/.test(key)) {
    throw bad("idempotency_key", "idempotency_key must be 1 to 255 characters without control characters");
  }
  return key;
}

/** To, Cc and Bcc of a MIME message (every occurrence); Bcc is removed by intake before storing. */
export function recipientsFromMime(raw: Buffer): string[] {
  return recipientsOf(readMimeBody(raw).headers);
}

/**
 * A MIME message read by intake's own reader (so intake need not read it again); a 400 naming body when it has
 * no header block (an mbox "From " line on top included), or when a line that is no header field comes before
 * the blank line (intake would make it and all after it body, where a client sending a whole message through the
 * API surely meant headers).
 */
function readMimeBody(raw: Buffer): ReadMessage {
  let read: ReadMessage;
  try {
    read = readMessage(raw); // as intake will: any mix of CRLF, LF and CR line ends
  } catch (e) {
    if (e instanceof BadLineEndingError) throw bad("body", e.message);
    throw e;
  }
  const { headers, body, endedBy } = read;
  if (headers.length === 0 || read.mailboxLine) throw bad("body", "body is not a MIME message: no valid header block");
  if (endedBy === "line") {
    const line = body.subarray(0, Math.max(0, body.indexOf("\r\n"))).toString("utf8").slice(0, 60);
    throw bad("body", `body is not a MIME message: ${JSON.stringify(line)} is not a header field, and no blank line comes before it`);
  }
  return read;
}

function recipientsOf(headers: SplitMessage["headers"]): string[] {
  return addressesIn(headers, "to", "cc", "bcc");
}

/** The valid addresses of every field with one of these (lower-case) names, in the message's order. */
function addressesIn(headers: SplitMessage["headers"], ...names: string[]): string[] {
  const out: string[] = [];
  for (const h of headers) {
    if (!names.includes(h.key)) continue;
    for (const a of addressparser(fieldValue(h), { flatten: true })) {
      if (a.address && isMailbox(a.address)) out.push(a.address);
    }
  }
  return out;
}

interface Structured {
  input: ComposeInput;
  hasContent: boolean;
}

async function structured(b: SendBody, from: Mailbox): Promise<Structured> {
  const replyTo = mailboxesOf("reply_to", b.reply_to);
  if (b.reply_to !== undefined && replyTo.length === 0) throw bad("reply_to", "reply_to is empty");
  const headers = headersOf(b.headers);
  const clash = headers.find((h) => replyTo.length > 0 && h.name.toLowerCase() === "reply-to");
  if (clash) throw bad("reply_to", "give Reply-To once: as reply_to, or in headers");
  const subject = b.subject === undefined ? undefined : noControl("subject", b.subject);
  const attachments = await attachmentsOf(b.attachments);
  const input: ComposeInput = {
    from,
    replyTo,
    to: mailboxesOf("to", b.to),
    cc: mailboxesOf("cc", b.cc),
    bcc: mailboxesOf("bcc", b.bcc),
    subject,
    text: b.text,
    html: b.html,
    headers,
    attachments,
  };
  const hasContent = [b.from, b.to, b.cc, b.bcc, b.subject, b.text, b.html].some((v) => v !== undefined) || attachments.length > 0;
  return { input, hasContent };
}

const HEADER_NAME = /^[!-9;-~]+$/; // printable ASCII except ':' (RFC 5322 ftext)

function headersOf(h: SendBody["headers"]): { name: string; value: string }[] {
  if (h === undefined) return [];
  const pairs: { name: string; value: string; field: string }[] = [];
  if (Array.isArray(h)) {
    h.forEach((item, i) => {
      const field = `headers[${i}]`;
      if (typeof item === "string") {
        const colon = item.indexOf(":");
        if (colon <= 0) throw bad(field, `${field} must look like "Name: value"`);
        pairs.push({ name: item.slice(0, colon).trim(), value: item.slice(colon + 1).trim(), field });
      } else {
        pairs.push({ name: item.name, value: item.value, field });
      }
    });
  } else {
    for (const [name, v] of Object.entries(h)) {
      for (const value of Array.isArray(v) ? v : [v]) pairs.push({ name, value, field: `headers.${name}` });
    }
  }
  return pairs.map(({ name, value, field }) => {
    noControl(field, name);
    noControl(field, value);
    if (!HEADER_NAME.test(name)) throw bad(field, `${field}: ${JSON.stringify(name)} is not a valid header name`);
    if (RESERVED_HEADERS.has(name.toLowerCase())) throw bad(field, `${field}: ${name} is set by outpost, not by the request`);
    return { name, value };
  });
}

const BASE64 = /^[A-Za-z0-9+/_\-\s]*={0,2}\s*$/;

/** JSON attachments carry base64; multipart file parts carry their bytes, name and type. */
async function attachmentsOf(list: SendBody["attachments"]): Promise<ComposeAttachment[]> {
  if (list === undefined) return [];
  return await Promise.all(
    list.map(async (a, i): Promise<ComposeAttachment> => {
      const field = `attachments[${i}]`;
      if (a instanceof Blob) {
        return {
          filename: a instanceof File && a.name ? noControl(`${field}.filename`, a.name) : undefined,
          content: Buffer.from(await a.arrayBuffer()),
          contentType: a.type ? noControl(`${field}.content_type`, a.type.split(";")[0]!.trim()) : undefined,
        };
      }
      if (!BASE64.test(a.content)) throw bad(`${field}.content`, `${field}.content must be base64`);
      for (const k of ["filename", "content_type", "cid"] as const) {
        const v = a[k];
        if (v !== undefined) noControl(`${field}.${k}`, v);
      }
      return { filename: a.filename, content: Buffer.from(a.content, "base64"), contentType: a.content_type, cid: a.cid };
    }),
  );
}
