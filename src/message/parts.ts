/**
 * @module message/parts — rewrites the text/html parts of a MIME message and keeps every other byte as it was:
 * headers, text parts, attachments, embedded messages (message/rfc822, never opened), preambles, epilogues,
 * boundaries. A message that cannot be taken apart exactly (message/split.ts), or one past the limits, comes
 * back unchanged with the reason, never as an exception.
 *
 * A rewritten part keeps its Content-Transfer-Encoding (base64 with its line length, quoted-printable, 7bit,
 * 8bit) and its charset. Two exceptions, each changing that part's header: text its charset cannot hold goes
 * out as UTF-8 (`charset=utf-8`), and a 7bit/8bit part whose rewritten text no longer fits those rules (an
 * octet over 127 in 7bit, a line over 998 octets) goes out quoted-printable.
 */
import { encodeBody, fitsAsLines } from "./transfer.ts";
import { DEFAULTS, planFor, relabel, type HtmlPart, type RewriteLimits } from "./split.ts";

export type { RewriteLimits } from "./split.ts";

/** One text/html part's decoded text → its new text. `partIndex` counts HTML parts from 0 in MIME order. */
export interface HtmlTransform {
  (html: string, ctx: { partIndex: number }): string | Promise<string>;
}

export type RewriteResult =
  | { ok: true; body: Buffer; changedParts: number }
  /** `body` is the input, unchanged */
  | { ok: false; body: Buffer; reason: string };

/** Runs `transform` over every text/html part. Never throws: any failure returns the message unchanged. */
export async function rewriteHtmlParts(message: Buffer, transform: HtmlTransform, limits: RewriteLimits = {}): Promise<RewriteResult> {
  const compiled = await compileMessage<never>(message, async (html, ctx) => ({ pieces: [await transform(html, ctx)], holes: [] }), { ...DEFAULTS, ...limits });
  return compiled.ok ? compiled.render(() => "") : { ok: false, body: message, reason: compiled.reason };
}

/** An HTML part's new text, `holes` (filled per copy) between `pieces`: pieces[0] fill(holes[0]) pieces[1] … */
export interface HtmlTemplate<H> {
  pieces: string[];
  holes: H[];
}

/** Makes one HTML part's template: called once per part, in MIME order, when a message is compiled. */
export type HtmlCompiler<H> = (html: string, ctx: { partIndex: number }) => HtmlTemplate<H> | Promise<HtmlTemplate<H>>;

export type Compiled<H> =
  | { ok: true; render(fill: (hole: H) => string): RewriteResult }
  | { ok: false; reason: string };

/**
 * Compiles a message for copies that differ only in a few holes (tracked links, the pixel): the HTML work and
 * the encoding of everything between the holes are done once, so a copy is the holes, encoded, spliced in.
 * Compiled messages are remembered per Buffer and `key`, which must name what `compile` does.
 */
export function compileHtmlParts<H>(message: Buffer, key: string, compile: HtmlCompiler<H>, limits: RewriteLimits = {}): Promise<Compiled<H>> {
  const full = { ...DEFAULTS, ...limits };
  const cacheKey = `${key}\n${JSON.stringify(full)}`;
  let known = compiled.get(message);
  if (!known) compiled.set(message, (known = new Map()));
  let result = known.get(cacheKey) as Promise<Compiled<H>> | undefined;
  if (!result) {
    result = compileMessage(message, compile, full);
    known.set(cacheKey, result);
  }
  return result;
}

const compiled = new WeakMap<Buffer, Map<string, Promise<Compiled<unknown>>>>();

async function compileMessage<H>(message: Buffer, compile: HtmlCompiler<H>, limits: Required<RewriteLimits>): Promise<Compiled<H>> {
  try {
    const plan = await planFor(message, limits);
    if (!Array.isArray(plan)) return { ok: false, reason: plan.reason };
    const segments: (Buffer | CompiledPart<H>)[] = [];
    for (const s of plan) segments.push(Buffer.isBuffer(s) ? s : compilePart(s, await compile(s.text, { partIndex: s.index })));
    return { ok: true, render: (fill) => render(message, segments, fill) };
  } catch (e) {
    return { ok: false, reason: failure(e) };
  }
}

interface CompiledPart<H> {
  part: HtmlPart;
  template: HtmlTemplate<H>;
  /** the template is the text as it was: the part goes out as sent */
  unchanged: boolean;
  /** the charset cannot hold the pieces: the part goes out as UTF-8 */
  utf8: boolean;
  /** each piece in the part's charset (or UTF-8) */
  pieceBytes: Buffer[];
  /** quoted-printable parts: each piece encoded on its own (see qpChunk) */
  qpPieces: Buffer[];
  headers: Buffer;
}

function compilePart<H>(part: HtmlPart, template: HtmlTemplate<H>): CompiledPart<H> {
  const unchanged = template.holes.length === 0 && template.pieces.join("") === part.text;
  if (unchanged) return { part, template, unchanged, utf8: false, pieceBytes: [], qpPieces: [], headers: part.headers };
  const pieces = template.pieces.map((p) => asLines(part, p));
  const inCharset = pieces.map((p) => part.codec.encode(p));
  // the charset cannot hold the rewritten text (a € added to an ISO-8859-1 part): the part switches to UTF-8,
  // and its Content-Type says so
  const utf8 = inCharset.some((b) => b === null);
  const pieceBytes = utf8 ? pieces.map((p) => Buffer.from(p, "utf8")) : (inCharset as Buffer[]);
  const qpPieces = part.encoding === "quoted-printable" ? pieceBytes.map(qpChunk) : [];
  const headers = utf8 ? relabel(part.headers, true, part.encoding) : part.headers;
  return { part, template, unchanged, utf8, pieceBytes, qpPieces, headers };
}

function render<H>(message: Buffer, segments: (Buffer | CompiledPart<H>)[], fill: (hole: H) => string): RewriteResult {
  try {
    const out: Buffer[] = [];
    let changedParts = 0;
    for (const s of segments) {
      if (Buffer.isBuffer(s)) out.push(s);
      else if (s.unchanged) out.push(s.part.headers, s.part.body);
      else {
        out.push(...renderPart(s, s.template.holes.map((h) => asLines(s.part, fill(h)))));
        changedParts++;
      }
    }
    return { ok: true, body: Buffer.concat(out), changedParts };
  } catch (e) {
    return { ok: false, body: message, reason: failure(e) };
  }
}

function renderPart<H>(cp: CompiledPart<H>, fills: string[]): Buffer[] {
  const { part } = cp;
  const holeBytes = fills.map((f) => (cp.utf8 ? Buffer.from(f, "utf8") : part.codec.encode(f)));
  if (holeBytes.some((b) => b === null)) return encodeWhole(part, interleave(cp.template.pieces, fills).join(""));
  const filled = holeBytes as Buffer[];
  if (part.encoding === "quoted-printable") {
    // every piece and hole encoded on its own, joined by soft line breaks: valid quoted-printable (RFC 2045
    // §6.7) that decodes to the same text as encoding the whole, at the cost of a few short lines
    const chunks = interleave(cp.qpPieces, filled.map(qpChunk)).filter((c) => c.length > 0);
    return [cp.headers, ...chunks.flatMap((c, i) => (i === 0 ? [c] : [SOFT_BREAK, c]))];
  }
  const bytes = Buffer.concat(interleave(cp.pieceBytes, filled));
  if ((part.encoding === "7bit" || part.encoding === "8bit") && !fitsAsLines(part.encoding, bytes)) {
    return [relabel(part.headers, cp.utf8, "quoted-printable"), encodeBody("quoted-printable", bytes, part.decoded)];
  }
  return [cp.headers, encodeBody(part.encoding, bytes, part.decoded)];
}

/** The part re-encoded from its whole new text, when a hole's text does not fit the charset the pieces are in. */
function encodeWhole(part: HtmlPart, text: string): Buffer[] {
  const inCharset = part.codec.encode(text);
  const bytes = inCharset ?? Buffer.from(text, "utf8");
  let encoding = part.encoding;
  if ((encoding === "7bit" || encoding === "8bit") && !fitsAsLines(encoding, bytes)) encoding = "quoted-printable";
  const headers = inCharset && encoding === part.encoding ? part.headers : relabel(part.headers, !inCharset, encoding);
  return [headers, encodeBody(encoding, bytes, part.decoded)];
}

/** Quoted-printable of one piece, lines of at most 75 so the soft break "=" joining it to the next fits in 76. */
function qpChunk(bytes: Buffer): Buffer {
  if (bytes.length === 0) return EMPTY;
  // a tracked URL, the usual hole, needs no escapes, only soft breaks: done here, since libqp builds its output a
  // character at a time and every recipient's copy pays for its holes
  if (isQpLiteral(bytes)) return wrapLiteral(bytes, 75);
  return encodeBody("quoted-printable", bytes, { lineLength: 75, tail: EMPTY });
}

/** Printable ASCII other than "=": quoted-printable represents it as itself (RFC 2045 §6.7 rule 2). */
function isQpLiteral(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b < 0x21 || b > 0x7e || b === 0x3d) return false;
  }
  return true;
}

/** Lines of at most `max` octets, the soft break "=" included. */
function wrapLiteral(bytes: Buffer, max: number): Buffer {
  if (bytes.length <= max) return bytes;
  const out: Buffer[] = [];
  let at = 0;
  for (; bytes.length - at > max; at += max - 1) out.push(bytes.subarray(at, at + max - 1), SOFT_BREAK);
  out.push(bytes.subarray(at));
  return Buffer.concat(out);
}

const EMPTY = Buffer.alloc(0);
const SOFT_BREAK = Buffer.from("=\r\n");

/** What goes out as lines ends them in CRLF (juice writes its <style> block with bare LFs); base64 keeps its own. */
function asLines(part: HtmlPart, text: string): string {
  return part.encoding === "base64" ? text : text.replace(/\r\n|\r|\n/g, "\r\n");
}

function interleave<T>(pieces: T[], holes: T[]): T[] {
  const out: T[] = [];
  pieces.forEach((p, i) => {
    out.push(p);
    if (i < holes.length) out.push(holes[i]!);
  });
  return out;
}

function failure(e: unknown): string {
  return `rewriting failed: ${e instanceof Error ? e.message : String(e)}`;
}
