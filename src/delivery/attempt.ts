/**
 * @module delivery/attempt — one SMTP transaction (MAIL, RCPT each, DATA) on an open smtp-connection session,
 * and what each recipient's reply means.
 *
 * smtp-connection pipelines the envelope when the server offers PIPELINING, dot-stuffs the body and turns any bare
 * CR or LF into CRLF (its DataStream), adds SMTPUTF8 to MAIL FROM when an address is not ASCII and BODY=8BITMIME
 * when we say the body has 8-bit bytes. It has no way to ask for SMTPUTF8 for raw UTF-8 header fields (RFC 6532)
 * with ASCII addresses, so this module adds it to the MAIL FROM line itself (requestSmtpUtf8). It maps the
 * library's callback to per-recipient results:
 *   RCPT refused → that recipient gets its RCPT reply; the others get the DATA reply (one reply for all of them);
 *   MAIL refused → every recipient gets the MAIL reply; a reply-less failure (socket error, timeout) → deferred,
 *   code 0, 4.4.2, and the session is not reused.
 * Outcome per reply: delivery/classify.ts (2xx delivered, 4xx/none deferred, 5xx bounced).
 *
 * The library's DataStream looks at every byte of a message in JavaScript (to stuff dots and fix line ends), the
 * costliest pass over a large body on its way out. A body whose line ends are all CRLF already (every stored
 * body: intake makes them so) needs only its dots stuffed, which a native search does (stuffDots); a session
 * gets that shortcut from fastDataStream, and anything else still goes through the library's own pass. A body
 * intake has just stored and handed over is known to be in CRLF (message/line-ends isKnownCrlf) and is not
 * looked at for it again; any other is checked with one native search per line.
 */
import { isAscii } from "node:buffer";
import type SMTPConnection from "nodemailer/lib/smtp-connection";
import { firstBareLineEnd, isKnownCrlf } from "../message/line-ends.ts";
import { classifyReply, enhancedFor } from "./classify.ts";
import type { OutboundMessage, Outcome, RecipientResult } from "./types.ts";

export interface Reply {
  code: number;
  enhanced: string;
  text: string;
  /** set for local failures whose outcome the code (0) cannot tell */
  outcome?: Outcome;
  /** the reply is about this one recipient's address (its RCPT reply, or a check of that address) */
  own?: boolean;
}

/** "550 5.1.1 <x>: no such user" → {550, "5.1.1", whole reply}; multi-line replies keep their lines. */
export function parseReply(raw: string): Reply {
  const text = raw.trim();
  const m = /^(\d{3})(?:[ -](\d\.\d{1,3}\.\d{1,3})\b)?/.exec(text);
  const code = m ? Number(m[1]) : 0;
  return { code, enhanced: enhancedFor(code, m?.[2]), text };
}

export function outcomeOf(r: Reply): Outcome {
  if (r.outcome) return r.outcome;
  const c = classifyReply(r.code, r.enhanced, r.text);
  return c === "ok" ? "delivered" : c === "permanent" ? "bounced" : "deferred";
}

/** A failure with no reply from the server (network, timeout, local refusal). */
export function localReply(text: string, enhanced = "4.4.2"): Reply {
  return { code: 0, enhanced, text, outcome: enhanced.startsWith("5") ? "bounced" : "deferred" };
}

export function resultsFor(msg: OutboundMessage, mx: string, replyOf: (address: string) => Reply, outcome?: Outcome): RecipientResult[] {
  return msg.recipients.map((r) => {
    // smtp-connection trims what it sends, and names refused recipients that way
    const reply = replyOf(r.address.trim());
    return {
      recipientId: r.id,
      outcome: outcome ?? outcomeOf(reply),
      code: reply.code,
      enhanced: reply.enhanced,
      reply: reply.text,
      mx,
      ...(reply.own ? { aboutRecipient: true } : {}),
    };
  });
}

/** The fields smtp-connection puts on its errors (its typings leave them out). */
export type LibError = Error & {
  code?: string;
  /** the system error (ECONNREFUSED …) behind a wrapped one */
  originalCode?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  recipient?: string;
  rejectedErrors?: LibError[];
};

/** What smtp-connection's send() called back with. */
type SendEnd = { err: LibError | null; info?: { rejectedErrors?: LibError[]; response: string } };

/** What smtp-connection keeps about the transaction in flight; read only to attribute RCPT replies after a later failure. */
interface EnvelopeState {
  rejectedErrors?: LibError[];
}

export interface TransactionEnd {
  results: RecipientResult[];
  /** "reset": the server refused the message but the session is fine (RSET and reuse); "close": unusable */
  session: "ok" | "reset" | "close";
}

/** Bytes ≥ 0x80 somewhere in the message: declare BODY=8BITMIME. (Native scan: this runs on every message sent.) */
export function has8bit(body: Buffer): boolean {
  return !isAscii(body);
}

/** Bytes ≥ 0x80 before the blank line ending the header block: raw UTF-8 header fields (RFC 6532). */
export function headerHas8bit(body: Buffer): boolean {
  const crlf = body.indexOf("\r\n\r\n");
  // an LF blank line counts only before the CRLF one (looking past it would scan a stored body to its end)
  const lf = body.subarray(0, crlf >= 0 ? crlf : body.length).indexOf("\n\n");
  // no blank line: the whole message is header
  const end = lf >= 0 ? lf : crlf >= 0 ? crlf : body.length;
  return !isAscii(body.subarray(0, end));
}

export function nonAscii(s: string): boolean {
  return /[^\x00-\x7f]/.test(s);
}

/**
 * Runs the transaction; never throws. `guardMs` bounds the whole exchange in case the library never calls back
 * (its own socket timeout normally fires first).
 */
export async function transact(conn: SMTPConnection, msg: OutboundMessage, mx: string, guardMs: number): Promise<TransactionEnd> {
  const done = await send(conn, msg, guardMs);
  const replies = new Map<string, Reply>();
  if (!done.err && done.info) {
    for (const e of done.info.rejectedErrors ?? []) if (e.recipient) replies.set(e.recipient, { ...parseReply(e.response ?? ""), own: true });
    // every recipient not refused at RCPT was accepted and shares the DATA reply
    const data = parseReply(done.info.response);
    return { results: resultsFor(msg, mx, (a) => replies.get(a) ?? data), session: "ok" };
  }
  const err = done.err!;
  const fallback = err.response ? parseReply(err.response) : localFailure(err);
  if (err.command !== "MAIL FROM") {
    // RCPT refusals stand even when DATA or the connection failed afterwards
    const env = (conn as unknown as { _envelope?: EnvelopeState | false })._envelope;
    const rejected = err.rejectedErrors ?? (env ? env.rejectedErrors : undefined) ?? [];
    for (const e of rejected) if (e.recipient && e.response) replies.set(e.recipient, { ...parseReply(e.response), own: true });
  }
  const refusedOnly = (err.code === "EENVELOPE" || err.code === "EMESSAGE") && err.responseCode !== 421;
  const session = refusedOnly && !conn.destroyed ? "reset" : "close";
  return { results: resultsFor(msg, mx, (a) => replies.get(a) ?? fallback), session };
}

/** smtp-connection's send(), settled exactly once: by its callback, the connection ending, or `guardMs`. */
function send(conn: SMTPConnection, msg: OutboundMessage, guardMs: number): Promise<SendEnd> {
  const to = [...new Set(msg.recipients.map((r) => r.address.trim()))];
  const envelope = { from: msg.envelopeFrom, to, size: msg.body.length, use8BitMime: has8bit(msg.body) };
  return new Promise<SendEnd>((resolve) => {
    const finish = (r: SendEnd) => {
      clearTimeout(guard);
      conn.removeListener("end", onEnd);
      resolve(r);
    };
    const fail = (message: string, code: string) => finish({ err: Object.assign(new Error(message), { code }) });
    const guard = setTimeout(() => fail("no reply to the transaction in time", "ETIMEDOUT"), guardMs);
    // close() forgets a send in flight without calling back; the library calls back right after 'end' when it
    // has an error to give, so 'end' decides only a tick later
    const onEnd = () => setImmediate(() => fail("connection closed during the transaction", "ECONNECTION"));
    conn.once("end", onEnd);
    const start = () => conn.send(envelope, msg.body, (err, info) => finish({ err: err as LibError | null, info: info ?? undefined }));
    // without SMTPUTF8 offered the message goes as it is (Postfix's default for mail not flagged SMTPUTF8):
    // docs/delivery-routing.md
    if (headerHas8bit(msg.body) && offers(conn, "SMTPUTF8")) requestSmtpUtf8(conn, start);
    else start();
  });
}

/** The parts of smtp-connection used to add SMTPUTF8 to MAIL FROM; private, so typed here. */
interface CommandWriter {
  _supportedExtensions?: string[];
  _sendCommand: (this: CommandWriter, str: string | Buffer, logStr?: string) => void;
}

/** The server's EHLO reply listed `ext` (as smtp-connection recorded it). */
function offers(conn: SMTPConnection, ext: string): boolean {
  return (conn as unknown as CommandWriter)._supportedExtensions?.includes(ext) ?? false;
}

/**
 * Runs `start` (which must call conn.send) with MAIL FROM getting the SMTPUTF8 parameter. smtp-connection writes
 * MAIL FROM synchronously inside send() (PIPELINING or not), so the command writer is wrapped only for that call.
 */
function requestSmtpUtf8(conn: SMTPConnection, start: () => void): void {
  const c = conn as unknown as CommandWriter;
  const own = Object.hasOwn(c, "_sendCommand");
  const write = c._sendCommand;
  c._sendCommand = function (str, logStr) {
    if (typeof str === "string" && str.startsWith("MAIL FROM:") && !/ SMTPUTF8\b/.test(str)) {
      return write.call(this, `${str} SMTPUTF8`, logStr);
    }
    return write.call(this, str, logStr);
  };
  try {
    start();
  } finally {
    if (own) c._sendCommand = write;
    else delete (c as Partial<CommandWriter>)._sendCommand;
  }
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = Buffer.from(".");
const LINE_START_DOT = Buffer.from("\n.");

/**
 * RFC 5321 §4.5.2 transparency: a "." at the start of a line gets a second one. `atLineStart`: the byte before
 * `body` ended a line (or there was none). `body` itself when no line starts with a dot (no copy).
 */
export function stuffDots(body: Buffer, atLineStart: boolean): Buffer {
  const parts: Buffer[] = [];
  if (atLineStart && body[0] === DOT[0]) parts.push(DOT);
  let from = 0;
  for (let at = body.indexOf(LINE_START_DOT); at >= 0; at = body.indexOf(LINE_START_DOT, at + 2)) {
    parts.push(body.subarray(from, at + 1), DOT);
    from = at + 1;
  }
  if (parts.length === 0) return body;
  parts.push(body.subarray(from));
  return Buffer.concat(parts);
}

/** What smtp-connection's DataStream (nodemailer 10) keeps, read and updated by the shortcut; private, so typed here. */
interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  /** the last byte seen, false before the first */
  lastByte: number | false;
  push(chunk: Buffer): boolean;
  _transform(chunk: Buffer | string, encoding: string, done: () => void): void;
}

interface SendStreamMaker {
  _createSendStream?: (this: SendStreamMaker, callback: unknown) => DataStreamState;
}

/**
 * Gives the session's message streams the CRLF shortcut (see the module comment). A library without the private
 * parts this relies on keeps its own stream, unchanged.
 */
export function fastDataStream(conn: SMTPConnection): void {
  const c = conn as unknown as SendStreamMaker;
  const make = c._createSendStream;
  if (typeof make !== "function") return;
  c._createSendStream = function (callback) {
    const stream = make.call(this, callback);
    if (typeof stream.inByteCount === "number" && "lastByte" in stream) stream._transform = crlfTransform;
    return stream;
  };
}

/** DataStream's _transform for a chunk in CRLF: dots stuffed natively; any other chunk takes the library's way. */
function crlfTransform(this: DataStreamState, chunk: Buffer | string, encoding: string, done: () => void): void {
  // a CR ending the previous chunk is decided by this one's first byte: the library's way
  const crlf = typeof chunk !== "string" && chunk.length > 0 && this.lastByte !== CR && (isKnownCrlf(chunk) || firstBareLineEnd(chunk) < 0);
  if (!crlf) {
    return Object.getPrototypeOf(this)._transform.call(this, chunk, encoding, done);
  }
  const out = stuffDots(chunk, this.lastByte === false || this.lastByte === LF);
  this.inByteCount += chunk.length;
  this.outByteCount += out.length;
  this.lastByte = chunk[chunk.length - 1]!;
  this.push(out);
  done();
}

/** A failure without a server reply: refused before sending (permanent) or a broken session (temporary). */
function localFailure(err: LibError): Reply {
  // smtp-connection refuses these before a byte is sent; sending again would fail the same way
  if (err.code === "EENVELOPE") return localReply(err.message, "5.1.3");
  if (err.code === "EMESSAGE" && /larger than allowed/.test(err.message)) return localReply(err.message, "5.3.4");
  return localReply(err.message, "4.4.2");
}
