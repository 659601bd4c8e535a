/**
 * @module intake/prepare — the recipient-independent message steps, applied once at intake:
 * line ends to CRLF, the header block ended where its first non-header line is (Postfix's rule),
 * X-Outpost-* option and label headers read and removed, Bcc removed, Message-ID/Date added when missing.
 */
import type { MessageOptions } from "../queue/enqueue.ts";
import { authorsOf, type Authors } from "../message/authors.ts";
import {
  addHeader,
  BadLineEndingError,
  countHeaders,
  fieldValue,
  headerValue,
  joinInPlace,
  joinMessage,
  normalizeLineEndings,
  rfc5322Date,
  removeHeaders,
  splitAtHeaderEnd,
  type HeaderEnd,
  type SplitMessage,
} from "../message/headers.ts";
import { isLabelHeader, labelsOfHeaders, type Labels } from "./labels.ts";
import { IntakeError } from "./policy.ts";

/** What every option and label field's name begins with, lower-case. */
const OUR_PREFIX = "x-outpost-";

const OPTION_HEADERS: Record<keyof MessageOptions, string> = {
  inlineCss: "X-Outpost-Inline-CSS",
  trackClicks: "X-Outpost-Track-Clicks",
  trackOpens: "X-Outpost-Track-Opens",
  trackBounces: "X-Outpost-Track-Bounces",
  unsubscribe: "X-Outpost-Unsubscribe",
};

export interface Prepared {
  body: Buffer;
  subject: string;
  /** the Message-ID field's `<id@host>` (always present after preparation, unless the client's is malformed) */
  messageIdHeader?: string;
  /** options named by X-Outpost-* headers (yes/no); absent ones are not set */
  headerOptions: Partial<MessageOptions>;
  /** X-Outpost-Tag and X-Outpost-Metadata-KEY, checked */
  headerLabels: Partial<Labels>;
  /** `Received` fields in the stored header block, our trace line included: the hops so far */
  received: number;
  /** the addresses of the From and Sender fields */
  authors: Authors;
}

export interface PrepareOptions {
  /** `raw` as readMessage already read it (the API reads the header block first, to find the author and recipients) */
  read?: ReadMessage;
  /** our Received field, put on top of what the client sent (which alone decides where its headers end) */
  trace?: Buffer;
  now?: Date;
  /**
   * `raw` is ours to rewrite, with this many free bytes before it in the same memory (message/line-ends
   * LineEndWriter): the new header block is written there, in front of the body, instead of copying the message.
   */
  room?: number;
}

/**
 * A message already in CRLF (SMTP normalises while receiving, with the same rule) passes the line-end step
 * without a copy, and with `room` the result is a view of `raw`'s memory: one copy of a message, not three.
 */
export function prepareMessage(raw: Buffer, hostname: string, opts: PrepareOptions = {}): Prepared {
  let read = opts.read;
  try {
    read ??= readMessage(raw);
  } catch (e) {
    if (e instanceof BadLineEndingError) throw new IntakeError(554, "5.6.0", e.message, 400, "body");
    throw e;
  }
  let m: SplitMessage = { headers: read.headers, body: read.body };
  // most mail has none of our X-Outpost-* fields: then there is nothing to read or remove but Bcc
  const ours = m.headers.some((h) => h.key.startsWith(OUR_PREFIX));
  const headerOptions = ours ? readOptionHeaders(m) : {};
  const headerLabels = ours ? labelsOfHeaders(m.headers, (h) => decodeSubject(fieldValue(h))) : {};
  m = removeHeaders(m, ours ? [...Object.values(OPTION_HEADERS), "Bcc"] : ["Bcc"]);
  if (ours) m = { headers: m.headers.filter((h) => !isLabelHeader(h.key)), body: m.body };
  let messageId = headerValue(m, "Message-ID");
  if (messageId === null) {
    messageId = `<${crypto.randomUUID()}@${hostname}>`;
    m = addHeader(m, "Message-ID", messageId);
  }
  if (!m.headers.some((h) => h.key === "date")) m = addHeader(m, "Date", rfc5322Date(opts.now ?? new Date()));
  if (opts.trace) m = { headers: [{ name: "Received", key: "received", raw: opts.trace.toString("latin1") }, ...m.headers], body: m.body };
  const authors = authorsOf(m);
  const body = (opts.room !== undefined && joinInPlace(m, roomAndMessage(raw, opts.room))) || joinMessage(m);
  return {
    body,
    subject: decodeSubject(headerValue(m, "Subject") ?? ""),
    messageIdHeader: msgIdOf(messageId),
    headerOptions,
    headerLabels,
    received: countHeaders(m, "Received"),
    authors,
  };
}

/** A message's header block as intake reads it, before anything is changed. */
export interface ReadMessage extends HeaderEnd {
  /** the first line was an mbox separator ("From alice@x Mon Jan  1 …"), now read as an X-Mailbox-Line field */
  mailboxLine: boolean;
}

/**
 * Line ends made CRLF (throws BadLineEndingError) and the header block split off where its first non-header line
 * is: like Postfix, such a line ends the block instead of refusing the message (the API refuses such a body
 * itself: api/send/normalize.ts). Read once per message: the API hands its reading to intake with the message.
 */
export function readMessage(raw: Buffer): ReadMessage {
  const crlf = normalizeLineEndings(raw);
  // "F" or ">" first, or it cannot be one: most messages are spared making a string of their start
  const mailboxLine = (crlf[0] === 0x46 || crlf[0] === 0x3e) && MBOX_FROM_LINE.test(crlf.subarray(0, 200).toString("latin1"));
  const split = splitAtHeaderEnd(mailboxLine ? Buffer.concat([Buffer.from("X-Mailbox-Line: ", "latin1"), crlf]) : crlf);
  return { ...split, mailboxLine };
}

/** The `<id@host>` of a Message-ID field (RFC 5322 msg-id), as a returned report quotes it. */
function msgIdOf(value: string | null): string | undefined {
  return value?.match(/<[^<>\s]+>/)?.[0];
}

/** `raw` with the `room` bytes in front of it, as one view of the same memory. */
function roomAndMessage(raw: Buffer, room: number): Buffer {
  return Buffer.from(raw.buffer, raw.byteOffset - room, room + raw.length);
}

/**
 * "From SENDER Www Mmm dd hh:mm" — the shape of an mbox separator, so prose ("From the desk of …") and an obsolete
 * "From : alice@x" field are left alone. Such a line at the very top, as some clients and scripts send, becomes an
 * X-Mailbox-Line field: it is no header, and left as it is it would end the header block at once and turn every
 * real header (Bcc included) into body text.
 */
const MBOX_FROM_LINE = /^>*From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d\d:\d\d/;


/**
 * yes/no (true/false, 1/0, on/off: the words the API takes) only, and each at most once: a word we do not know, or two answers, would otherwise
 * fall back to the [tracking] default without a word, so such a message is refused (554 5.6.0; 400 over HTTP).
 */
function readOptionHeaders(m: SplitMessage): Partial<MessageOptions> {
  const out: Partial<MessageOptions> = {};
  for (const [key, name] of Object.entries(OPTION_HEADERS) as [keyof MessageOptions, string][]) {
    const count = countHeaders(m, name);
    if (count === 0) continue;
    if (count > 1) throw new IntakeError(554, "5.6.0", `${name} given ${count} times: give it once`, 400, "body");
    const v = headerValue(m, name)!.trim().toLowerCase();
    if (v === "yes" || v === "true" || v === "1" || v === "on") out[key] = true;
    else if (v === "no" || v === "false" || v === "0" || v === "off") out[key] = false;
    else throw new IntakeError(554, "5.6.0", `${name}: expected yes or no, got "${v.slice(0, 40)}"`, 400, "body");
  }
  return out;
}

/** Decodes RFC 2047 encoded-words so the stored subject is readable in `queue list` and the API. */
function decodeSubject(s: string): string {
  return s.replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=\s*/g, (_all, charset: string, enc: string, text: string) => {
    try {
      const bytes =
        enc.toUpperCase() === "B"
          ? Buffer.from(text, "base64")
          : Buffer.from(text.replace(/_/g, " ").replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), "latin1");
      return new TextDecoder(charset.toLowerCase() as ConstructorParameters<typeof TextDecoder>[0]).decode(bytes);
    } catch {
      return text;
    }
  });
}
