/**
 * @module bounce/parse — what a message that came back says: a bounce (which recipients failed, with what status
 * and class), a delay or success report, a complaint (RFC 5965 ARF), an auto-reply (RFC 3834), or ordinary mail.
 *
 * MIME is mailparser's. In order, the parser tries: a feedback report; the RFC 3464 delivery-status fields (in
 * their part, else inline in the text where a broken boundary left them, else anywhere in the body of a report
 * whose MIME structure mailparser could not see); then, for a message that looks like a bounce (from
 * MAILER-DAEMON or postmaster, a bounce subject, a multipart/report), the plain-text formats of
 * bounce/plain-text.ts. The class of each recipient comes from the one rule table, bounce/rules.ts.
 *
 * Hostile input is bounded, never thrown on: the first MAX_INPUT_BYTES are read, the text scans have caps, and
 * a failure inside mailparser leaves the raw text scans.
 */
import { simpleParser, type Attachment, type ParsedMail } from "mailparser";
import { readDsnFields, readFieldGroups, type DsnRecipientFields } from "./dsn-fields.ts";
import { isDelayWarning, messageIdIn, replyCodes, splitAtReturned, textRecipients } from "./plain-text.ts";
import { classifyFailure, type BounceClass } from "./rules.ts";

export type { BounceClass } from "./rules.ts";

export interface BouncedRecipient {
  /** Original-Recipient when present (lower-cased domain), else Final-Recipient / the address found in text */
  address: string;
  finalRecipient?: string;
  action: "failed" | "delayed" | "delivered" | "relayed" | "expanded";
  /** RFC 3463 code such as "5.1.1", "" when none could be found */
  status: string;
  /** basic SMTP reply code when found (550) */
  code?: number;
  /** Diagnostic-Code or the text line(s) found, single line, at most MAX_DIAGNOSTIC characters */
  diagnostic: string;
  remoteMta?: string;
  class: BounceClass;
}

export interface ParsedReport {
  kind: "bounce" | "delay" | "success" | "complaint" | "autoreply" | "ordinary" | "unparsed";
  /** for "bounce": the failed ones; for delay/success: the reported ones */
  recipients: BouncedRecipient[];
  /** "<id@host>" of the returned message when present */
  originalMessageId?: string;
  complaint?: { feedbackType: string; originalRecipient?: string; originalMailFrom?: string };
  reportingMta?: string;
}

/** Reports are small; the returned copy after them may be cut (its headers come first). */
export const MAX_INPUT_BYTES = 1 << 20;
const MAX_DIAGNOSTIC = 1000;

type Action = BouncedRecipient["action"];

/** What the parser needs of one message, from mailparser or, when it fails, from the raw text. */
interface Message {
  header: (name: string) => string;
  /** lower-cased addresses of From, To, Sender and Reply-To: never reported as failed recipients */
  own: Set<string>;
  text: string;
  dsnParts: string[];
  feedbackPart?: string;
  returnedPart?: string;
  /** the raw body after the header, line endings as LF */
  body: string;
}

export async function parseReport(raw: Buffer): Promise<ParsedReport> {
  const source = normalize(raw);
  const message = await read(source);
  return complaintIn(message) ?? deliveryReportIn(message) ?? textBounceIn(message) ?? notABounce(message);
}

/** The first MAX_INPUT_BYTES with CRLF and bare CR (old Mac) line endings made LF, bytes otherwise kept. */
function normalize(raw: Buffer): string {
  const head = raw.length > MAX_INPUT_BYTES ? raw.subarray(0, MAX_INPUT_BYTES) : raw;
  return head.toString("latin1").replace(/\r\n?/g, "\n");
}

const PARSER_OPTIONS = {
  keepDeliveryStatus: true, // the delivery-status part as an attachment, not merged into the text
  ignoreEmbedded: true, // a returned message/rfc822 stays an attachment: its text (maybe a bounce itself) is not ours
  skipTextToHtml: true,
  skipImageLinks: true,
  skipTextLinks: true,
  checksumAlgo: false,
  maxHtmlLengthToParse: 200_000,
  maxChildNodes: 200,
  maxHeadSize: 256 * 1024,
} as const;

async function read(source: string): Promise<Message> {
  const split = source.search(/\n\n/);
  const body = split < 0 ? "" : source.slice(split + 2);
  let mail: ParsedMail | null = null;
  try {
    mail = await simpleParser(Buffer.from(source, "latin1"), PARSER_OPTIONS);
  } catch {
    // mailparser refused the structure: the raw body scans below still run
  }
  if (!mail) return { header: rawHeader(source.slice(0, split < 0 ? source.length : split)), own: new Set(), text: "", dsnParts: [], body };
  const parts = (types: RegExp) => mail.attachments.filter((a) => types.test(a.contentType)).map(contentOf);
  return {
    header: (name) => headerText(mail.headers.get(name)),
    own: ownAddresses(mail),
    text: (mail.text ?? "").replace(/\r\n?/g, "\n"),
    dsnParts: parts(/^message\/(global-)?delivery-status$/i),
    feedbackPart: parts(/^message\/feedback-report$/i)[0],
    returnedPart: parts(/^(message\/(rfc822|global|rfc822-headers|global-headers)|text\/rfc822-headers)$/i)[0],
    body,
  };
}

function contentOf(a: Attachment): string {
  return a.content.subarray(0, MAX_INPUT_BYTES).toString("utf8").replace(/\r\n?/g, "\n");
}

/** mailparser's header values are strings, structured values ({ value, params }) or address objects. */
function headerText(value: unknown): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object") {
    const v = value as { value?: unknown; text?: unknown; params?: Record<string, string> };
    if (typeof v.text === "string") return v.text;
    if (typeof v.value === "string") {
      const params = Object.entries(v.params ?? {}).map(([k, p]) => `; ${k}=${p}`);
      return v.value + params.join("");
    }
  }
  return "";
}

function rawHeader(head: string): (name: string) => string {
  const unfolded = head.replace(/\n[ \t]+/g, " ");
  return (name) => new RegExp(`^${name}:[ \\t]*(.*)$`, "im").exec(unfolded)?.[1] ?? "";
}

function ownAddresses(mail: ParsedMail): Set<string> {
  const out = new Set<string>();
  for (const field of [mail.from, mail.to, mail.replyTo, mail.headers.get("sender")]) {
    for (const group of [field].flat()) {
      const list = (group as { value?: { address?: string; group?: { address?: string }[] }[] } | undefined)?.value ?? [];
      for (const a of list) for (const addr of [a.address, ...(a.group ?? []).map((g) => g.address)]) if (addr) out.add(addr.toLowerCase());
    }
  }
  return out;
}

// ---- complaints (RFC 5965)

function complaintIn(m: Message): ParsedReport | null {
  const isArf = /report-type="?feedback-report/i.test(m.header("content-type"));
  if (!m.feedbackPart && !isArf) return null;
  const fields = readFieldGroups(m.feedbackPart ?? m.text).groups.find((g) => g.has("feedback-type"));
  const address = (v: string | undefined) => v?.replace(/^<(.*)>$/, "$1").trim() || undefined;
  const complaint = {
    // RFC 5965 requires the field; a report that lacks it is still someone's complaint
    feedbackType: fields?.get("feedback-type")?.toLowerCase() ?? "abuse",
    ...(address(fields?.get("original-rcpt-to")) ? { originalRecipient: address(fields?.get("original-rcpt-to")) } : {}),
    ...(address(fields?.get("original-mail-from")) ? { originalMailFrom: address(fields?.get("original-mail-from")) } : {}),
  };
  return { kind: "complaint", recipients: [], complaint, ...messageIdOf(m.returnedPart ?? splitAtReturned(m.text).returned) };
}

// ---- RFC 3464 delivery-status reports

function deliveryReportIn(m: Message): ParsedReport | null {
  const looksLikeReport = /multipart\/report/i.test(m.header("content-type")) || looksLikeBounce(m);
  let fields = m.dsnParts.map(readDsnFields);
  let returned = m.returnedPart;
  // a broken boundary leaves the fields in the text, or (no part found at all) only in the raw body
  for (const text of looksLikeReport ? [m.text, m.body] : []) {
    if (fields.some((f) => f.recipients.length > 0)) break;
    const inline = readDsnFields(text);
    fields = [inline];
    if (inline.recipients.length > 0) returned ??= text.slice(inline.end);
  }
  const found = dedupe(fields.flatMap((f) => f.recipients.map((r) => recipientFromFields(r, m))));
  if (found.length === 0) return null;
  const reportingMta = fields.find((f) => f.reportingMta)?.reportingMta;
  return {
    ...byAction(found),
    ...messageIdOf(returned ?? splitAtReturned(m.text).returned),
    ...(reportingMta ? { reportingMta } : {}),
  };
}

const ACTIONS: readonly Action[] = ["failed", "delayed", "delivered", "relayed", "expanded"];

function recipientFromFields(r: DsnRecipientFields, m: Message): BouncedRecipient | null {
  const address = r.originalRecipient ?? r.finalRecipient;
  if (!address) return null;
  // a report without a Diagnostic-Code (old Sendmail) says why in its transcript lines about that address
  const diagnostic = r.diagnostic ?? linesAbout(address, splitAtReturned(m.text || m.body).report);
  const codes = replyCodes(diagnostic);
  const status = r.status ?? codes.status;
  const action = actionOf(r.action, status);
  return {
    address: lowerDomain(address),
    ...(r.finalRecipient ? { finalRecipient: r.finalRecipient } : {}),
    action,
    status,
    ...(codes.code ? { code: codes.code } : {}),
    diagnostic: oneLine(diagnostic),
    ...(r.remoteMta ? { remoteMta: r.remoteMta } : {}),
    class: action === "failed" || action === "delayed" ? classifyFailure({ code: codes.code, status, text: diagnostic }) : "not_bounce",
  };
}

/** RFC 3464 actions; a non-standard one ("deliverable") or none is read from the status class. */
function actionOf(given: string | undefined, status: string): Action {
  if (ACTIONS.includes(given as Action)) return given as Action;
  if (given?.startsWith("deliver")) return "delivered";
  return status.startsWith("2") ? "delivered" : status.startsWith("4") ? "delayed" : "failed";
}

function linesAbout(address: string, text: string): string {
  const local = address.slice(0, address.lastIndexOf("@")).toLowerCase();
  const lines = text.split("\n").filter((line) => {
    const l = line.toLowerCase();
    if (line.length > 1000 || /^\s*(final|original)-recipient:/i.test(line)) return false;
    return l.includes(address.toLowerCase()) || (local.length >= 3 && wordIn(l, local));
  });
  return lines.slice(0, 20).join(" ");
}

function wordIn(haystack: string, word: string): boolean {
  for (let i = haystack.indexOf(word); i >= 0; i = haystack.indexOf(word, i + 1)) {
    const before = haystack[i - 1] ?? " ";
    const after = haystack[i + word.length] ?? " ";
    if (!/[\w.+-]/.test(before) && !/[\w+-]/.test(after)) return true;
  }
  return false;
}

/** The bounce's failed recipients; else the delayed ones; else the successes. */
function byAction(found: BouncedRecipient[]): Pick<ParsedReport, "kind" | "recipients"> {
  const failed = found.filter((r) => r.action === "failed");
  if (failed.length > 0) return { kind: "bounce", recipients: failed };
  const delayed = found.filter((r) => r.action === "delayed");
  if (delayed.length > 0) return { kind: "delay", recipients: delayed };
  return { kind: "success", recipients: found };
}

// ---- plain-text bounces

const BOUNCE_SENDER = /^(mailer-daemon|postmaster|mail-daemon|mailer|mmdf|smtp|daemon|bounces?|nobody)@/i;
const BOUNCE_SUBJECT =
  /undeliver|undelivered|delivery (status notification|failure|failed|has failed|problem|report)|failure notice|returned mail|mail delivery (failed|failure|system)|non.?delivery|could not be delivered|not delivered|delivery failure|mail failure|delayed mail|warning: could not send|nicht zustellbar|no se pudo entregar|non recapitabile|delivery notification/i;

function looksLikeBounce(m: Message): boolean {
  const from = m.header("from");
  const sender = /<([^<>]*)>/.exec(from)?.[1] ?? from.trim();
  return BOUNCE_SENDER.test(sender) || /mail delivery (subsystem|system)|mailer.?daemon/i.test(from)
    || BOUNCE_SUBJECT.test(m.header("subject")) || m.header("x-failed-recipients") !== "";
}

function textBounceIn(m: Message): ParsedReport | null {
  if (!looksLikeBounce(m)) return null;
  const text = m.text || m.body;
  const { report, returned } = splitAtReturned(text);
  const found = textRecipients(report, m.own);
  // Exim names the failed addresses in a header too; use it when the text gave none
  if (found.length === 0) for (const address of addressesIn(m.header("x-failed-recipients"))) found.push({ address, text: report });
  const action: Action = isDelayWarning(`${m.header("subject")}\n${report}`) ? "delayed" : "failed";
  const recipients = found.map(({ address, text: block }) => recipientFromText(address, block, action));
  const originalMessageId = messageIdOf(m.returnedPart ?? returned);
  if (recipients.length === 0) return { kind: "unparsed", recipients: [], ...originalMessageId };
  return { kind: action === "failed" ? "bounce" : "delay", recipients, ...originalMessageId };
}

function recipientFromText(address: string, block: string, action: Action): BouncedRecipient {
  const { code, status } = replyCodes(block);
  return {
    address: lowerDomain(address),
    action,
    status,
    ...(code ? { code } : {}),
    diagnostic: oneLine(diagnosticOf(block)),
    class: classifyFailure({ code, status, text: block }),
  };
}

/** A long block (Office 365's explanations) is shown by its reply lines, the ones with a code. */
function diagnosticOf(block: string): string {
  if (block.length <= MAX_DIAGNOSTIC) return block;
  const sentences = block.split(/(?<=[.'"])\s+/).filter((s) => /(?<![\d.])[245]\d\d[ -]|[245]\.\d{1,3}\.\d{1,3}/.test(s));
  return sentences.length > 0 ? sentences.join(" ") : block;
}

function addressesIn(value: string): string[] {
  return value.split(",").map((a) => a.trim().replace(/^<(.*)>$/, "$1")).filter((a) => /^[^\s@]{1,64}@[^\s@]{1,255}$/.test(a));
}

// ---- everything else

function notABounce(m: Message): ParsedReport {
  const autoSubmitted = m.header("auto-submitted").toLowerCase();
  const autoReply = autoSubmitted.startsWith("auto-replied") || m.header("x-autoreply") !== "" || m.header("x-autorespond") !== ""
    || /^auto.?reply$/i.test(m.header("precedence").trim())
    || /^(auto(matic)? ?reply|out of (the )?office|autoreply|vacation)\b/i.test(m.header("subject").trim());
  return { kind: autoReply ? "autoreply" : "ordinary", recipients: [] };
}

// ---- small helpers

function messageIdOf(returned: string | undefined): Pick<ParsedReport, "originalMessageId"> {
  const id = returned ? messageIdIn(returned) : undefined;
  return id ? { originalMessageId: id } : {};
}

function dedupe(list: (BouncedRecipient | null)[]): BouncedRecipient[] {
  const seen = new Set<string>();
  return list.filter((r): r is BouncedRecipient => {
    if (!r || seen.has(r.address.toLowerCase())) return false;
    seen.add(r.address.toLowerCase());
    return true;
  });
}

function lowerDomain(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? address : address.slice(0, at) + address.slice(at).toLowerCase();
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > MAX_DIAGNOSTIC ? `${line.slice(0, MAX_DIAGNOSTIC - 1)}…` : line;
}
