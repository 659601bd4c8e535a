/**
 * @module message/line-ends — every line end CRLF, written once into one buffer, in chunks as a message arrives
 * or in one go. The rule (message/headers normalizeLineEndings, which intake/prepare applies): CRLF stays, a bare
 * CR or a bare LF becomes CRLF, so none can act as a line end of its own downstream (SMTP smuggling); every other
 * byte is copied as it is (NUL too: refusing it is prepare's decision). A CR at the end of one chunk is decided
 * by the first byte of the next, so the result does not depend on how the message was split.
 */

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from("\r\n");

/** Index of the first bare CR or bare LF in `bytes`, or -1 when every line end is CRLF. */
export function firstBareLineEnd(bytes: Buffer): number {
  for (let cr = bytes.indexOf(CR), lf = bytes.indexOf(LF); cr >= 0 || lf >= 0; ) {
    if (cr >= 0 && (lf < 0 || cr < lf)) {
      if (bytes[cr + 1] !== LF) return cr;
      lf = bytes.indexOf(LF, cr + 2);
      cr = bytes.indexOf(CR, cr + 2);
    } else {
      if (lf === 0 || bytes[lf - 1] !== CR) return lf;
      lf = bytes.indexOf(LF, lf + 1);
    }
  }
  return -1;
}

/**
 * Buffers known to have CRLF line ends only, so that no one looks again: what a LineEndWriter finished or toCrlf
 * returned, and what message/headers puts together from such parts (intake's header rewrite; it may write over
 * the bytes in front of a message's body, with CRLF lines). A message is not written to once it is stored, so a
 * stored body intake hands to delivery (queue/handoff.ts) is still known when it is sent.
 */
const madeCrlf = new WeakSet<Buffer>();

/** `bytes` has CRLF line ends only, as far as this process knows without looking (see madeCrlf). */
export function isKnownCrlf(bytes: Buffer): boolean {
  return madeCrlf.has(bytes);
}

/** Records that `bytes` has CRLF line ends only (the caller made it from known parts) and returns it. */
export function knownCrlf(bytes: Buffer): Buffer {
  madeCrlf.add(bytes);
  return bytes;
}

/**
 * Writes normalised bytes into one growable buffer that keeps `room` free bytes in front of the message, where
 * intake/prepare writes the header block it rewrites instead of copying the message again (prepareMessage's
 * `room`). Capacity starts at `expectedBytes`; when that is outgrown, the buffer grows once to `growTo` (the
 * most the message may need: memory untouched is not resident) rather than doubling, so a large message is
 * copied at most once, and only the small start of it. Runs of bytes without a bare line end are copied with
 * one `set` each.
 */
export class LineEndWriter {
  private buf: Buffer;
  private end: number;
  /** the last byte written was a CR whose LF, if any, starts the next chunk */
  private pendingCr = false;

  constructor(
    expectedBytes: number,
    readonly room = 0,
    private readonly growTo = 0,
  ) {
    this.buf = Buffer.allocUnsafe(room + Math.max(0, expectedBytes));
    this.end = room;
  }

  write(chunk: Buffer): void {
    let i = 0;
    if (this.pendingCr && chunk.length > 0) {
      this.pendingCr = false;
      if (chunk[0] === LF) i = 1; // the LF of a CRLF split between chunks
      else this.append(CRLF.subarray(1)); // the CR was bare: CRLF
    }
    let run = 0;
    let cr = chunk.indexOf(CR, i);
    let lf = chunk.indexOf(LF, i);
    while (cr >= 0 || lf >= 0) {
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        if (cr + 1 === chunk.length) {
          this.pendingCr = true; // written below with the run; its LF, if any, comes with the next chunk
          break;
        }
        if (chunk[cr + 1] !== LF) {
          this.append(chunk.subarray(run, cr + 1));
          this.append(CRLF.subarray(1));
          run = cr + 1;
        } else lf = chunk.indexOf(LF, cr + 2); // CRLF: stays in the run
        cr = chunk.indexOf(CR, cr + 1);
      } else {
        this.append(chunk.subarray(run, lf)); // a bare LF: CRLF instead
        this.append(CRLF);
        run = lf + 1;
        lf = chunk.indexOf(LF, lf + 1);
      }
    }
    this.append(chunk.subarray(run));
  }

  /** Bytes written so far, line ends normalised (a view, `room` free bytes before it); a trailing CR is completed. */
  finish(): Buffer {
    if (this.pendingCr) {
      this.pendingCr = false;
      this.append(CRLF.subarray(1));
    }
    return knownCrlf(this.buf.subarray(this.room, this.end));
  }

  private append(bytes: Buffer): void {
    if (bytes.length === 0) return;
    if (this.end + bytes.length > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.room + this.growTo, this.end + bytes.length));
      this.buf.copy(grown, this.room, this.room, this.end);
      this.buf = grown;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }
}

/** `bytes` with every line end CRLF: `bytes` itself when it already is (no copy), else one normalised copy. */
export function toCrlf(bytes: Buffer): Buffer {
  if (madeCrlf.has(bytes)) return bytes;
  if (firstBareLineEnd(bytes) < 0) return knownCrlf(bytes);
  const w = new LineEndWriter(bytes.length + (bytes.length >> 4));
  w.write(bytes);
  return w.finish();
}
