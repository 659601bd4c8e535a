/**
 * @module message/split — a MIME message taken apart (mailsplit) into the runs of bytes that are kept as they
 * are and its text/html parts, decoded; the structure checked on the way (closing boundaries, nesting, sizes).
 */
import { Headers, Splitter } from "@zone-eu/mailsplit";
import libmime from "libmime";
import type { Transform } from "node:stream";
import { codecFor, type Codec } from "./charset.ts";
import { decodeBody, transferEncodingOf, type EncodedBody, type TransferEncoding } from "./transfer.ts";

export interface RewriteLimits {
  /** multipart nesting below the top (default 20) */
  maxDepth?: number;
  /** size of one HTML part's body as sent (default 8 MiB) */
  maxPartBytes?: number;
  /** MIME parts in the whole message (default 1,000) */
  maxParts?: number;
}

export const DEFAULTS: Required<RewriteLimits> = { maxDepth: 20, maxPartBytes: 8 * 1024 * 1024, maxParts: 1000 };

export interface HtmlPart {
  index: number;
  /** the part's header block as sent, blank line included */
  headers: Buffer;
  /** the part's body as sent */
  body: Buffer;
  encoding: TransferEncoding;
  decoded: EncodedBody;
  codec: Codec;
  text: string;
}

/** the message as runs of bytes kept as they are, and the HTML parts between them */
export type Plan = (Buffer | HtmlPart)[];

/**
 * Parsing is done once per message Buffer and remembered while the Buffer lives, since the same stored
 * message is personalised for each of its recipients. The Buffer must not be changed in place after.
 */
const plans = new WeakMap<Buffer, { limits: string; plan: Promise<Plan | { reason: string }> }>();

export function planFor(message: Buffer, limits: Required<RewriteLimits>): Promise<Plan | { reason: string }> {
  const key = JSON.stringify(limits);
  const known = plans.get(message);
  if (known?.limits === key) return known.plan;
  const plan = split(message, limits);
  plans.set(message, { limits: key, plan });
  return plan;
}

function split(message: Buffer, limits: Required<RewriteLimits>): Promise<Plan | { reason: string }> {
  return new Promise((resolve) => {
    const splitter = new Splitter({ ignoreEmbedded: true, maxChildNodes: limits.maxParts });
    const walk = new Walk(limits);
    const stream: Transform = splitter; // its typings name only the "data" event
    splitter.on("data", (chunk) => walk.add(chunk));
    stream.on("error", (e: Error) => resolve({ reason: `unreadable MIME: ${e.message}` }));
    stream.on("end", () => resolve(walk.finish(message)));
    splitter.end(message);
  });
}

type Chunk = Parameters<Parameters<Splitter["on"]>[1]>[0];
type MimeNode = Extract<Chunk, { type: "node" }>;

/** Collects mailsplit's chunks into a Plan, checking the limits and the structure on the way. */
class Walk {
  private plan: Plan = [];
  private literal: Buffer[] = [];
  private html: { node: MimeNode; headers: Buffer; chunks: Buffer[]; size: number } | null = null;
  private htmlParts = 0;
  /** each multipart's boundary */
  private boundaries = new Map<MimeNode, string>();
  /** the lines between parts: preambles, delimiters, epilogues (mailsplit may group a few in one chunk) */
  private between: string[] = [];
  private failure: string | null = null;

  constructor(private limits: Required<RewriteLimits>) {}

  add(chunk: Chunk): void {
    if (this.failure) return;
    if (chunk.type === "node") {
      this.endHtml();
      this.node(chunk);
    } else if (chunk.type === "body" && this.html?.node === chunk.node) {
      this.html.chunks.push(chunk.value);
      this.html.size += chunk.value.length;
      if (this.html.size > this.limits.maxPartBytes) this.failure = `an HTML part is over ${this.limits.maxPartBytes} bytes`;
    } else {
      this.endHtml();
      if (chunk.type === "data") this.between.push(chunk.value.toString("latin1"));
      this.literal.push(chunk.value);
    }
  }

  finish(message: Buffer): Plan | { reason: string } {
    this.endHtml();
    this.flushLiteral();
    if (this.failure) return { reason: this.failure };
    const between = this.between.join("");
    for (const [node, boundary] of this.boundaries) {
      if (!closes(boundary, between)) return { reason: `${node.contentType} without its closing boundary` };
    }
    // mailsplit promises an exact copy; checked, since a byte lost here would be lost for every recipient
    const whole = Buffer.concat(this.plan.flatMap((s) => (Buffer.isBuffer(s) ? [s] : [s.headers, s.body])));
    if (!whole.equals(message)) return { reason: "the parts found do not add up to the message" };
    return this.plan;
  }

  private node(node: MimeNode): void {
    let depth = 0;
    for (let p = node.parentNode; p; p = p.parentNode) depth++;
    if (depth > this.limits.maxDepth) {
      this.failure = `MIME nesting deeper than ${this.limits.maxDepth}`;
      return;
    }
    if (node.multipart) {
      const boundary = boundaryOf(node);
      if (!boundary) {
        this.failure = `${node.contentType} without a usable boundary`;
        return;
      }
      this.boundaries.set(node, boundary);
    }
    const headers = node.getHeaders();
    if (node.contentType === "text/html" && node.disposition !== "attachment") this.html = { node, headers, chunks: [], size: 0 };
    else this.literal.push(headers);
  }

  private endHtml(): void {
    if (!this.html) return;
    const { node, headers, chunks } = this.html;
    this.html = null;
    const index = this.htmlParts++;
    const part = readHtmlPart(index, node, headers, Buffer.concat(chunks));
    if ("reason" in part) {
      this.failure = `HTML part ${index}: ${part.reason}`;
      return;
    }
    this.flushLiteral();
    this.plan.push(part);
  }

  private flushLiteral(): void {
    if (this.literal.length > 0) this.plan.push(Buffer.concat(this.literal));
    this.literal = [];
  }
}

function readHtmlPart(index: number, node: MimeNode, headers: Buffer, body: Buffer): HtmlPart | { reason: string } {
  const encoding = transferEncodingOf(node.encoding);
  if (!encoding) return { reason: `Content-Transfer-Encoding ${JSON.stringify(node.encoding)} is unknown` };
  const decoded = decodeBody(encoding, body);
  if ("reason" in decoded) return decoded;
  const codec = codecFor(node.charset, decoded.bytes);
  if ("reason" in codec) return codec;
  let text: string;
  try {
    text = codec.decode(decoded.bytes);
  } catch {
    return { reason: `bytes that are not valid ${codec.label}` };
  }
  // encoded again, the text must give its bytes back (ISO-2022-JP may choose other escapes for the same
  // characters, which is fine); a decoder that had to substitute would lose bytes for good
  const again = codec.encode(text);
  if (!again || (!again.equals(decoded.bytes) && text.includes("\ufffd"))) return { reason: `bytes that are not valid ${codec.label}` };
  return { index, headers, body, encoding, decoded, codec, text };
}

/** A part's header block with its charset made UTF-8 and/or its Content-Transfer-Encoding changed. */
export function relabel(block: Buffer, toUtf8: boolean, encoding: TransferEncoding): Buffer {
  const headers = new Headers(block);
  if (toUtf8) {
    const type = libmime.parseHeaderValue(headers.getFirst("Content-Type"));
    type.params.charset = "utf-8";
    headers.update("Content-Type", libmime.buildHeaderValue(type));
  }
  if (encoding !== transferEncodingOf(headers.getFirst("Content-Transfer-Encoding") || false)) {
    headers.update("Content-Transfer-Encoding", encoding);
  }
  return headers.build();
}

/** The boundary parameter as mailsplit reads it: comments dropped, trailing blanks trimmed, ASCII only. */
function boundaryOf(node: MimeNode): string | null {
  const headers = node.headers;
  if (!headers) return null;
  const boundary = (libmime.parseHeaderValue(headers.getFirst("Content-Type"), { stripComments: true }).params.boundary ?? "").trimEnd();
  return boundary && Buffer.byteLength(boundary) === boundary.length ? boundary : null;
}

/** Is there a close-delimiter line "--boundary--" (RFC 2046 §5.1.1) among the lines between parts? */
function closes(boundary: string, lines: string): boolean {
  const escaped = boundary.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(?:^|\\n)--${escaped}--[ \\t]*(?:\\r?\\n|$)`).test(lines);
}
