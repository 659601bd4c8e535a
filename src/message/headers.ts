/**
 * @module message/headers — reads and edits the top-level header block of a raw MIME message,
 * leaving every other byte untouched (body, MIME structure, attachments).
 */
import { isKnownCrlf, knownCrlf, toCrlf } from "./line-ends.ts";

export interface HeaderField {
  /** as written, e.g. "Subject" */
  name: string;
  /** lower-cased once, since every lookup compares case-insensitively */
  key: string;
  /** the whole field including name, folding and the trailing CRLF */
  raw: string;
}

export interface SplitMessage {
  headers: HeaderField[];
  /** everything after the blank line that ends the header block (the separator itself excluded) */
  body: Buffer;
}

/** Splits a CRLF message into its header fields and body. A message without a blank line is all header. */
export function splitMessage(raw: Buffer): SplitMessage {
  const sep = raw.indexOf("\r\n\r\n");
  const headEnd = sep < 0 ? raw.length : sep + 2;
  const head = raw.subarray(0, headEnd).toString("latin1");
  const body = sep < 0 ? Buffer.alloc(0) : raw.subarray(sep + 4);
  const headers: HeaderField[] = [];
  for (const line of head.split(/(?<=\r\n)/)) {
    if (line === "") continue;
    const last = headers[headers.length - 1];
    if ((line.startsWith(" ") || line.startsWith("\t")) && last) last.raw += line;
    else {
      const name = line.slice(0, Math.max(0, line.indexOf(":"))).trim();
      headers.push({ name, key: name.toLowerCase(), raw: line });
    }
  }
  return { headers, body };
}

/**
 * A header field's first line: a name, optional WSP (obsolete syntax), colon. RFC 5322 names are printable
 * ASCII; 8-bit bytes are let in too, since a client's odd "X-Café:" line must not end the header block early
 * and push a Bcc after it into the body that every recipient reads.
 */
const FIELD_START = /^([^\x00-\x20\x7f:]+)[ \t]*:/;

export interface HeaderEnd extends SplitMessage {
  /** "blank": the block ended at its blank line; "line": at a line that is no header field; "end": at the end */
  endedBy: "blank" | "line" | "end";
}

/**
 * Splits a CRLF message as Postfix's cleanup does: the header block ends at the blank line, or at
 * the first line that is neither a header field nor a continuation of one; that line starts the
 * body (joinMessage then puts the blank line before it). A message with no header at all is all body.
 */
export function splitAtHeaderEnd(raw: Buffer): HeaderEnd {
  const headers: HeaderField[] = [];
  for (let pos = 0; pos < raw.length; ) {
    const eol = crlfAt(raw, pos);
    const next = eol < 0 ? raw.length : eol + 2;
    const line = raw.toString("latin1", pos, next);
    const last = headers[headers.length - 1];
    if (line === "\r\n") return { headers, body: partOf(raw, raw.subarray(next)), endedBy: "blank" };
    if (last && (line.startsWith(" ") || line.startsWith("\t"))) last.raw += line;
    else {
      const name = FIELD_START.exec(line)?.[1];
      if (name === undefined) return { headers, body: partOf(raw, raw.subarray(pos)), endedBy: "line" };
      headers.push({ name, key: name.toLowerCase(), raw: line });
    }
    pos = next;
  }
  return { headers, body: Buffer.alloc(0), endedBy: "end" };
}

/** Where the next CRLF at or after `from` starts, or -1. Bun searches a Buffer for one byte far faster than for two. */
function crlfAt(raw: Buffer, from: number): number {
  for (let lf = raw.indexOf(10, from + 1); lf > 0; lf = raw.indexOf(10, lf + 1)) if (raw[lf - 1] === 13) return lf - 1;
  return -1;
}

/** A part of `whole`, known to be in CRLF when `whole` is. */
function partOf(whole: Buffer, part: Buffer): Buffer {
  return isKnownCrlf(whole) ? knownCrlf(part) : part;
}

/** A CR not followed by LF, or an LF not preceded by CR. */
const BARE_LINE_END = /\r(?!\n)|(?<!\r)\n/;

/** The joined message is known to be in CRLF when its body is and its header block (a few lines: looked at) is. */
function joined(m: SplitMessage, head: string, message: Buffer): Buffer {
  return isKnownCrlf(m.body) && !BARE_LINE_END.test(head) ? knownCrlf(message) : message;
}

export function joinMessage(m: SplitMessage): Buffer {
  const head = headBlock(m);
  return joined(m, head, Buffer.concat([Buffer.from(head, "latin1"), m.body]));
}

/**
 * joinMessage without copying the body: the header block and its blank line are written into `region` just before
 * `m.body`, which must be a view of `region`; the bytes of `region` before the body are the caller's to overwrite
 * (the original header block, free room in front). null when the body lies elsewhere or the block does not fit.
 */
export function joinInPlace(m: SplitMessage, region: Buffer): Buffer | null {
  const bodyAt = m.body.byteOffset - region.byteOffset;
  if (m.body.buffer !== region.buffer || bodyAt < 0 || bodyAt + m.body.length > region.length) return null;
  const head = headBlock(m);
  const at = bodyAt - head.length; // latin1: one byte per character
  if (at < 0) return null;
  region.write(head, at, "latin1");
  return joined(m, head, region.subarray(at, bodyAt + m.body.length));
}

/** The header fields, each ending CRLF, and the blank line (latin1: one byte per character). */
function headBlock(m: SplitMessage): string {
  return m.headers.map((h) => (h.raw.endsWith("\r\n") ? h.raw : h.raw + "\r\n")).join("") + "\r\n";
}

/** The unfolded value of the first field with this name (case-insensitive), or null. Latin-1 in, UTF-8 decoded. */
export function headerValue(m: SplitMessage, name: string): string | null {
  const lower = name.toLowerCase();
  const h = m.headers.find((f) => f.key === lower);
  return h ? fieldValue(h) : null;
}

const NON_ASCII = /[^\x00-\x7f]/;

/** A field's value, unfolded and trimmed, its bytes read as UTF-8. */
export function fieldValue(h: HeaderField): string {
  const value = h.raw.slice(h.raw.indexOf(":") + 1).replace(/\r\n/g, "").trim();
  return NON_ASCII.test(value) ? Buffer.from(value, "latin1").toString("utf8") : value;
}

export function countHeaders(m: SplitMessage, name: string): number {
  const lower = name.toLowerCase();
  let count = 0;
  for (const f of m.headers) if (f.key === lower) count++;
  return count;
}

/** Removes every field with one of these names (case-insensitive). */
export function removeHeaders(m: SplitMessage, names: string[]): SplitMessage {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return { headers: m.headers.filter((h) => !drop.has(h.key)), body: m.body };
}

/** Appends a field at the end of the header block (value must already be RFC 5322-safe). */
export function addHeader(m: SplitMessage, name: string, value: string, atTop = false): SplitMessage {
  const text = `${name}: ${value}\r\n`;
  // the block is kept one character per byte: UTF-8 is spelled out byte by byte, ASCII (most fields) is already so
  const field = { name, key: name.toLowerCase(), raw: NON_ASCII.test(text) ? Buffer.from(text, "utf8").toString("latin1") : text };
  return { headers: atTop ? [field, ...m.headers] : [...m.headers, field], body: m.body };
}

export class BadLineEndingError extends Error {}

/**
 * Makes every line end CRLF (message/line-ends: bare LF and bare CR become CRLF), so none can act as a line end
 * of its own downstream (SMTP smuggling); NUL is refused, since no 8BITMIME text may carry it. A message already
 * in CRLF is returned as it is, not copied.
 */
export function normalizeLineEndings(raw: Buffer): Buffer {
  if (raw.includes(0)) throw new BadLineEndingError("message contains NUL bytes");
  return toCrlf(raw);
}

let dateCache = { second: Number.NaN, text: "" };

/** "Wed, 25 Nov 2026 13:45:54 +0000": an RFC 5322 date-time in UTC, formatted once per second (every message needs one). */
export function rfc5322Date(at: Date | number = Date.now()): string {
  const ms = typeof at === "number" ? at : at.getTime();
  const second = Math.floor(ms / 1000);
  if (second !== dateCache.second) dateCache = { second, text: new Date(second * 1000).toUTCString().replace("GMT", "+0000") };
  return dateCache.text;
}

export interface Trace {
  /** who handed the message over, already header-safe ("client.example ([192.0.2.7])"), or null */
  from: string | null;
  /** our host name */
  by: string;
  /** "ESMTPSA (TLSv1.3 …)", "HTTP" */
  with: string;
  at?: Date | number;
}

/** Our RFC 5321 §4.4 trace field, the same shape whichever door the message came in by. */
export function receivedField(t: Trace): Buffer {
  const from = t.from ? `from ${t.from}\r\n\t` : "";
  return Buffer.from(`Received: ${from}by ${t.by} (outpost) with ${t.with};\r\n\t${rfc5322Date(t.at)}\r\n`, "utf8");
}
