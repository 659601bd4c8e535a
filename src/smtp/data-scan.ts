/**
 * @module smtp/data-scan — smtp-server's DATA pass (end of data, dot-unstuffing) done with native searches.
 *
 * smtp-server has no hook for this: its SMTPStream `_feedDataStream` looks at every byte of DATA in JavaScript
 * and copies each chunk once more (`Buffer.concat` of the 4 bytes it keeps back and the chunk). `scanData`
 * replaces it on each parser our connections create (OutpostConnection `_createParser`, the one seam) with the
 * same rules: it finds line-start dots with `Buffer.indexOf("\n.")` and hands on the runs between them as
 * subarrays, so a chunk without dot-stuffing is never copied. It keeps the library's state exactly (the 4 bytes
 * kept back, `_atDataStart`, `dataBytes`/`byteLength`/`sizeExceeded` after each chunk, what is left for the
 * command parser), including its quirks: a line-start dot is only looked at from the third byte of DATA on,
 * and after a bare LF only `..` is unstuffed (`<LF>.<CRLF>` is content). `data-scan.test.ts` runs both on
 * random inputs and chunkings and pins smtp-server's source text: on an upgrade, re-check this file against
 * the new `smtp-stream.js`.
 */
import type { SMTPStream } from "smtp-server/lib/smtp-stream.js";

type Done = (err?: Error | null) => void;

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const LINE_DOT = Buffer.from("\n.");
/** smtp-server keeps the last 4 bytes of a chunk back: the terminator may go on in the next chunk */
const KEEP = 4;
const NOTHING = Buffer.alloc(0);
/** past this many runs in one chunk (dot-stuffed lines), one copy costs less than a write per run */
const MAX_RUNS = 2;

/** Installed as `parser._feedDataStream`; `this` is smtp-server's SMTPStream, in data mode. */
export function scanData(this: SMTPStream, input: Buffer, done: Done): void {
  let held = this._lastBytes || NOTHING;
  this._lastBytes = false;
  let chunk = input;
  if (this._atDataStart) {
    // the first bytes of DATA came in a segment of at most 4 bytes (rare): decide the start on them joined
    if (held.length) [chunk, held] = [Buffer.concat([held, chunk]), NOTHING];
    if (chunk.length >= 3 && chunk[0] === DOT && chunk[1] === CR && chunk[2] === LF) {
      return this._endDataMode(false, chunk.subarray(3), done);
    }
    if (chunk.length >= 2 && chunk[0] === DOT && chunk[1] === DOT) {
      chunk = chunk.subarray(1);
      this._atDataStart = false;
    }
  }
  const text = new Joined(held, chunk);
  const runs: Buffer[] = [];
  let from = 0; // the first byte not yet handed on
  let finish: () => void;
  for (let dot = text.nextLineDot(2); ; dot = text.nextLineDot(dot + 1)) {
    if (dot < 0) {
      const keep = Math.max(from, text.length - KEEP);
      this._lastBytes = text.subarrayFrom(keep);
      text.push(runs, from, keep);
      finish = () => emit(this, runs, done);
      break;
    }
    if (text.at(dot - 2) === CR && text.at(dot + 1) === CR && text.at(dot + 2) === LF) {
      text.push(runs, from, dot);
      const remainder = text.subarrayFrom(dot + 3);
      finish = () => end(this, runs, remainder, done);
      break;
    }
    if (text.at(dot + 1) === DOT) {
      text.push(runs, from, dot);
      from = dot + 1;
    }
  }
  // smtp-server goes on after each dot-stuffed line on a later turn of the event loop; so do we, once per chunk.
  // It shows: smtp-server's continue() called back synchronously into the end of a message (a client pipelining
  // the next message in the same segment) loses the next continuation, unless that message had a stuffed line
  if (from > 0) setImmediate(finish);
  else finish();
}

/** A chunk with the bytes kept back from the one before in front, looked at without joining them. */
class Joined {
  readonly length: number;
  constructor(
    private head: Buffer,
    private tail: Buffer,
  ) {
    this.length = head.length + tail.length;
  }
  at(i: number): number | undefined {
    return i < this.head.length ? this.head[i] : this.tail[i - this.head.length];
  }
  /** The position ≥ `from` of a "." right after a LF whose next two bytes exist, or -1 (smtp-server's loop bound). */
  nextLineDot(from: number): number {
    const h = this.head.length;
    for (let i = from; i <= h && i < this.length - 2; i++) if (this.at(i - 1) === LF && this.at(i) === DOT) return i;
    const lf = this.tail.indexOf(LINE_DOT, Math.max(0, from - 1 - h));
    const dot = lf < 0 ? -1 : h + lf + 1;
    return dot >= 0 && dot < this.length - 2 ? dot : -1;
  }
  /** Adds the bytes [from, to) to `runs`, as subarrays. */
  push(runs: Buffer[], from: number, to: number): void {
    const h = this.head.length;
    if (from < h && from < to) runs.push(this.head.subarray(from, Math.min(to, h)));
    if (to > h && to > from) runs.push(this.tail.subarray(Math.max(from, h) - h, to - h));
  }
  subarrayFrom(from: number): Buffer {
    const h = this.head.length;
    return from >= h ? this.tail.subarray(from - h) : Buffer.concat([this.head.subarray(from), this.tail]);
  }
}

/** Hands `runs` to the message stream, counted as smtp-server counts them; `done` once it can take more. */
function emit(parser: SMTPStream, runs: Buffer[], done: Done): void {
  const stream = parser._dataStream!;
  let more = true;
  for (const run of joinMany(runs)) {
    parser._countDataBytes(run.length);
    if (stream.writable) more = stream.write(run) && more;
  }
  if (more || stream.destroyed) return done();
  // a stream that the application destroys never drains, it only closes (as smtp-server waits)
  const onDrain = () => {
    stream.removeListener("drain", onDrain);
    stream.removeListener("close", onDrain);
    done();
  };
  stream.once("drain", onDrain);
  stream.once("close", onDrain);
}

/** The last runs before the terminator; then smtp-server's own `_endDataMode`, with what follows it. */
function end(parser: SMTPStream, runs: Buffer[], remainder: Buffer, done: Done): void {
  const stream = parser._dataStream!;
  const all = joinMany(runs);
  const last = all.pop();
  for (const run of all) {
    parser._countDataBytes(run.length);
    if (stream.writable) stream.write(run);
  }
  if (last) parser._countDataBytes(last.length);
  parser._endDataMode(last ?? false, remainder, done);
}

function joinMany(runs: Buffer[]): Buffer[] {
  return runs.length > MAX_RUNS ? [Buffer.concat(runs)] : runs;
}
