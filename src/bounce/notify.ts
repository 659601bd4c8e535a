/**
 * @module bounce/notify — RFC 3464 delivery status notifications to the envelope sender of a bounced message,
 * or of a delayed one (`delivery.delay_warning`, Postfix's delay_warning_time: action "delayed", still retried).
 *
 * The DSN re-enters through intake (like a Postfix notice through cleanup): envelope sender `<>`, no owner, no
 * tracking, so it is queued, delivered and retried like any mail, and can never itself cause another DSN.
 * Never sent for: the null sender, a message with `Auto-Submitted` other than "no" (RFC 3834), a
 * `multipart/report` (a report about a report), or a message with more than 25 `Received` headers (a loop).
 * A non-ASCII recipient is named `Final-Recipient: utf-8; …` in RFC 6533's 7-bit xtext form (addressField).
 */
import type { Intake } from "../intake/accept.ts";
import type { EnqueuedMessage } from "../queue/enqueue.ts";
import { countHeaders, headerValue, joinMessage, rfc5322Date, splitMessage, type SplitMessage } from "../message/headers.ts";

/** The part of intake a DSN needs (type only: delivery/ hands its Intake through here). */
export type DsnIntake = Pick<Intake, "acceptNow">;

export const MAX_RECEIVED = 25;

export interface FailedRecipient {
  address: string;
  /** RFC 3463 code, e.g. "5.1.1" or "4.4.7" */
  status: string;
  /** the basic SMTP code of the reply, 0 when there was none (network error, expiry after one) */
  code: number;
  /** the reply or a local description */
  diagnostic: string;
  mx?: string;
  /** ms since epoch */
  lastAttemptAt: number;
}

export interface DsnInput {
  /** the reporting MTA: our hostname */
  hostname: string;
  queueId: string;
  /** the bounced message's envelope sender: the DSN goes there */
  envelopeFrom: string;
  /** ms since epoch */
  arrivalDate: number;
  /** the original message (CRLF); its header block is attached */
  original: Buffer;
  recipients: FailedRecipient[];
  /** ms since epoch */
  now: number;
  /** what happened to the recipients: "failed" (bounced, the default) or "delayed" (still being retried) */
  action?: "failed" | "delayed";
  /** with "delayed": when the message expires (ms since epoch), for Will-Retry-Until */
  willRetryUntil?: number;
}

/** Why no DSN is sent for this message, or null when one may be. */
export function dsnSuppressedReason(envelopeFrom: string, original: Buffer | SplitMessage): string | null {
  if (envelopeFrom.trim() === "") return "null sender";
  const m = Buffer.isBuffer(original) ? splitMessage(original) : original;
  const auto = headerValue(m, "Auto-Submitted");
  if (auto !== null && auto.split(";")[0]!.trim().toLowerCase() !== "no") return "Auto-Submitted message";
  const type = headerValue(m, "Content-Type");
  if (type && /^\s*multipart\/report\b/i.test(type)) return "multipart/report message";
  if (countHeaders(m, "Received") > MAX_RECEIVED) return `more than ${MAX_RECEIVED} Received headers`;
  return null;
}

/** Builds the DSN message (CRLF). Pure apart from the random boundary and Message-ID. */
export function buildDsn(d: DsnInput, original: SplitMessage = splitMessage(d.original)): Buffer {
  const boundary = `dsn-${crypto.randomUUID()}`;
  const date = rfc5322Date(d.now);
  const origId = headerValue(original, "Message-ID");
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${d.hostname}>`,
    // RFC 6532: a UTF-8 sender stays readable here; the envelope, not this field, decides where the DSN goes
    `To: <${d.envelopeFrom.replace(/[\r\n<>]/g, "")}>`,
    `Subject: ${d.action === "delayed" ? "Delayed Mail (still being retried)" : "Undelivered Mail Returned to Sender"}`,
    `Date: ${date}`,
    `Message-ID: <${crypto.randomUUID()}@${d.hostname}>`,
    ...(origId && /^<[^<>\r\n]+>$/.test(origId) ? [`In-Reply-To: ${origId}`, `References: ${origId}`] : []),
    `Auto-Submitted: auto-replied`,
    `MIME-Version: 1.0`,
    `Content-Type: multipart/report; report-type=delivery-status;`,
    `\tboundary="${boundary}"`,
  ];
  const human = humanPart(d);
  const status = statusPart(d);
  const parts = [
    head.join("\r\n"),
    "",
    "This is a MIME-encapsulated message.",
    "",
    `--${boundary}`,
    "Content-Description: Notification",
    ...humanBody(human),
    `--${boundary}`,
    "Content-Description: Delivery report",
    "Content-Type: message/delivery-status",
    "",
    status,
    `--${boundary}`,
    "Content-Description: Undelivered Message Headers",
    "Content-Type: text/rfc822-headers",
    // the headers are kept byte for byte; 8bit says they may hold raw UTF-8 (RFC 6532 senders)
    "Content-Transfer-Encoding: 8bit",
    "",
  ].join("\r\n");
  return Buffer.concat([
    Buffer.from(parts + "\r\n", "utf8"),
    // the header block and its blank line, then the closing boundary
    joinMessage({ headers: original.headers, body: Buffer.from(`--${boundary}--\r\n`, "latin1") }),
  ]);
}

/**
 * Queues the DSN through intake unless the rules forbid it, inside the caller's open transaction (the one
 * that records the bounce), so the bounce and its notice commit together. Returns the queued DSN, or the
 * reason none is sent. Throws what intake throws (the caller logs it: a DSN failure must never undo the bounce).
 */
export function queueDsn(intake: DsnIntake, d: DsnInput): { queued: EnqueuedMessage } | { skipped: string } {
  const original = splitMessage(d.original); // read once for the rules and for the attached headers
  const reason = dsnSuppressedReason(d.envelopeFrom, original);
  if (reason) return { skipped: reason };
  if (d.recipients.length === 0) return { skipped: "no recipients to report" };
  const queued = intake.acceptNow({
    userId: null,
    allowedDomains: null,
    envelopeFrom: "",
    recipients: [d.envelopeFrom],
    raw: buildDsn(d, original),
    source: "dsn",
    // a DSN is never tracked: tracking would give it a VERP return path instead of <>
    options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
  });
  return { queued };
}

/** Plain 7bit when the text is ASCII (readable in any client and by naive parsers), else base64 UTF-8. */
function humanBody(text: string): string[] {
  if (/^[\x00-\x7f]*$/.test(text) && text.split("\r\n").every((l) => l.length <= 900)) {
    return ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit", "", text];
  }
  return [
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: base64",
    "",
    wrap76(Buffer.from(text, "utf8").toString("base64")),
    "",
  ];
}

function humanPart(d: DsnInput): string {
  const lines = [`This is the mail system at host ${d.hostname}.`, ""];
  if (d.action === "delayed") {
    lines.push(
      "####################################################################",
      "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
      "####################################################################",
      "",
      "Your message could not be delivered yet to one or more recipients.",
      `It will be retried until ${rfc5322Date(d.willRetryUntil ?? d.now)}. Its headers are attached below.`,
    );
  } else {
    lines.push(
      "I'm sorry to have to inform you that your message could not",
      "be delivered to one or more recipients. Its headers are attached below.",
    );
  }
  lines.push(
    "",
    "For further assistance, please send mail to postmaster and",
    "include this problem report.",
    "",
    "                   The mail system",
    "",
  );
  for (const r of d.recipients) {
    lines.push(`<${r.address}>: ${r.mx ? `host ${r.mx} said: ` : ""}${r.diagnostic}`, "");
  }
  return lines.join("\r\n");
}

function statusPart(d: DsnInput): string {
  const fields = [
    `Reporting-MTA: dns; ${d.hostname}`,
    `X-Outpost-Queue-ID: ${ascii(d.queueId)}`,
    `Arrival-Date: ${rfc5322Date(d.arrivalDate)}`,
    "",
  ];
  for (const r of d.recipients) {
    fields.push(
      `Final-Recipient: ${addressField(r.address)}`,
      `Action: ${d.action ?? "failed"}`,
      `Status: ${r.status}`,
      ...(r.mx ? [`Remote-MTA: dns; ${ascii(r.mx)}`] : []),
      fold(`Diagnostic-Code: ${r.code > 0 ? "smtp" : "X-Outpost"}; ${ascii(r.diagnostic)}`),
      `Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`,
      ...(d.action === "delayed" && d.willRetryUntil !== undefined ? [`Will-Retry-Until: ${rfc5322Date(d.willRetryUntil)}`] : []),
      "",
    );
  }
  return fields.join("\r\n");
}

/**
 * The value of an RFC 3464 address field: `rfc822; a@b` for an ASCII address, else RFC 6533's `utf-8;` type in
 * its utf-8-addr-xtext form (`utf-8; \x{7528}\x{6237}@…`). That form, not raw UTF-8, because this part is a
 * message/delivery-status, whose fields are 7-bit (raw UTF-8 is only for message/global-delivery-status); readers
 * that don't know the type still see ASCII, and the address can be decoded exactly instead of lost to "?".
 */
export function addressField(address: string): string {
  const a = address.replace(/[\r\n]+/g, " ").trim();
  return /^[\x00-\x7f]*$/.test(a) ? `rfc822; ${ascii(a)}` : `utf-8; ${utf8AddrXtext(a)}`;
}

/** RFC 6533 utf-8-addr-xtext: QCHARs as they are, every other code point as \x{HEX} (upper case, no leading zeros, ≥ 2 digits). */
function utf8AddrXtext(address: string): string {
  let out = "";
  for (const ch of address) {
    const cp = ch.codePointAt(0)!;
    out += isQchar(cp) ? ch : `\\x{${cp.toString(16).toUpperCase().padStart(2, "0")}}`;
  }
  return out;
}

/** RFC 6533 QCHAR: printable ASCII except "+" and "=" (xtext's specials) and "\" (the escape itself). */
function isQchar(cp: number): boolean {
  return cp >= 0x21 && cp <= 0x7e && cp !== 0x2b && cp !== 0x3d && cp !== 0x5c;
}

/** Header fields must be one line of 7-bit text: drop line breaks, replace anything else with "?". */
function ascii(s: string): string {
  return s.replace(/[\r\n]+/g, " ").replace(/[^\x20-\x7e\t]/g, "?");
}

/** Folds a long field at spaces so no line exceeds 78 characters where a space allows. */
function fold(field: string): string {
  if (field.length <= 78) return field;
  const words = field.split(" ");
  const lines: string[] = [];
  let line = "";
  for (const w of words) {
    if (line && line.length + 1 + w.length > 78) {
      lines.push(line);
      line = " " + w;
    } else {
      line = line ? `${line} ${w}` : w;
    }
  }
  if (line) lines.push(line);
  return lines.join("\r\n");
}

function wrap76(s: string): string {
  return s.match(/.{1,76}/g)?.join("\r\n") ?? "";
}
