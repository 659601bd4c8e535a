/**
 * @module dkim/body-hash — the relaxed body hash (RFC 6376 §3.4.4, §3.7) of a message body, in one pass over its
 * bytes. mailauth's canonicaliser gives the same hash, but it cuts the body into a Buffer per line and allocates
 * for every line with runs of blanks, which makes it the slowest step after the RSA operation for HTML newsletters
 * (indented markup); every recipient's tracked copy has a body of its own, so the hash is paid per copy.
 *
 * Relaxed: each run of blanks (SP, HTAB) becomes one SP, blanks at the end of a line go, empty lines at the end of
 * the body go, and a body that is not empty ends in CRLF. A bare LF counts as a line end (CRLF); a bare CR is text.
 */
import { createHash } from "node:crypto";

const SP = 0x20;
const TAB = 0x09;
const CR = 0x0d;
const LF = 0x0a;

/** base64 SHA-256 of the relaxed canonical form of `body` (the bytes after the header block's blank line). */
export function relaxedBodyHash(body: Uint8Array): string {
  // at most: every LF becomes CRLF, and a CRLF is added at the end
  const out = Buffer.allocUnsafe(body.length * 2 + 2);
  let w = 0;
  /** where the line being written starts in `out` */
  let lineStart = 0;
  /** the end of the last line that had content: empty lines after it are dropped if nothing follows */
  let kept = 0;
  let blank = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === SP || c === TAB) {
      blank = true;
    } else if (c === LF || (c === CR && body[i + 1] === LF)) {
      if (c === CR) i++;
      const empty = w === lineStart;
      out[w++] = CR;
      out[w++] = LF;
      if (!empty) kept = w;
      lineStart = w;
      blank = false;
    } else {
      if (blank) out[w++] = SP;
      blank = false;
      out[w++] = c;
    }
  }
  if (w > lineStart) {
    // a last line without its line end gets one
    out[w++] = CR;
    out[w++] = LF;
    kept = w;
  }
  return createHash("sha256").update(out.subarray(0, kept)).digest("base64");
}
