/**
 * @module message/transfer — a part's Content-Transfer-Encoding (RFC 2045 §6) both ways: the body as sent →
 * bytes, and rewritten bytes → a body in the same encoding and style (base64 keeps its line length).
 */
import libbase64 from "libbase64";
import libqp from "libqp";

export type TransferEncoding = "base64" | "quoted-printable" | "7bit" | "8bit" | "binary";

/** RFC 5322 §2.1.1: a line is at most 998 octets, CRLF excluded */
export const MAX_LINE = 998;

/** The encoding a Content-Transfer-Encoding value names ("" or absent: 7bit), or null for one we don't know. */
export function transferEncodingOf(value: string | false): TransferEncoding | null {
  const v = (value || "7bit").trim().toLowerCase();
  return v === "base64" || v === "quoted-printable" || v === "7bit" || v === "8bit" || v === "binary" ? v : null;
}

export interface EncodedBody {
  /** the content bytes */
  bytes: Buffer;
  /** base64 only: the line length to wrap at when encoding again */
  lineLength: number;
  /** base64 only: the line ends and blanks after the last base64 line, kept as they were */
  tail: Buffer;
}

/** Decodes a body; a reason instead when it is not what its encoding says (base64 with foreign characters). */
export function decodeBody(encoding: TransferEncoding, body: Buffer): EncodedBody | { reason: string } {
  if (encoding === "quoted-printable") return { bytes: libqp.decode(body), lineLength: 0, tail: Buffer.alloc(0) };
  if (encoding !== "base64") return { bytes: body, lineLength: 0, tail: Buffer.alloc(0) };
  let end = body.length;
  while (end > 0 && isSpace(body[end - 1]!)) end--;
  const text = body.subarray(0, end).toString("latin1");
  if (!isBase64(text.replace(/[ \t\r\n]+/g, ""))) return { reason: "invalid base64" };
  const firstBreak = text.indexOf("\n");
  const lineLength = firstBreak < 0 ? 76 : text.slice(0, firstBreak).replace(/\r$/, "").length;
  return { bytes: libbase64.decode(text), lineLength: lineLength || 76, tail: body.subarray(end) };
}

/** Encodes rewritten content the way `decoded` came; CRLF line ends for what goes out as lines. */
export function encodeBody(encoding: TransferEncoding, bytes: Buffer, decoded: Pick<EncodedBody, "lineLength" | "tail">): Buffer {
  if (encoding === "base64") return Buffer.concat([Buffer.from(libbase64.wrap(libbase64.encode(bytes), decoded.lineLength), "latin1"), decoded.tail]);
  if (encoding === "quoted-printable") return Buffer.from(libqp.wrap(libqp.encode(bytes), decoded.lineLength || 76), "latin1");
  return bytes;
}

/**
 * May these bytes go out as they are under 7bit/8bit? 7bit allows no octet over 127 (RFC 2045 §2.7), and
 * neither allows a line over 998 octets (§2.8) — a long rewritten line must then go out quoted-printable.
 */
export function fitsAsLines(encoding: "7bit" | "8bit", bytes: Buffer): boolean {
  if (encoding === "7bit" && bytes.some((b) => b > 0x7f)) return false;
  let start = 0;
  for (let nl = bytes.indexOf(0x0a); nl >= 0; nl = bytes.indexOf(0x0a, start)) {
    const cr = nl > start && bytes[nl - 1] === 0x0d ? 1 : 0;
    if (nl - start - cr > MAX_LINE) return false;
    start = nl + 1;
  }
  return bytes.length - start <= MAX_LINE;
}

function isSpace(b: number): boolean {
  return b === 0x0d || b === 0x0a || b === 0x20 || b === 0x09;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64, or several padded pieces one after the other (some encoders pad every line). */
function isBase64(s: string): boolean {
  return BASE64.test(s) || s.split(/(?<==)(?=[^=])/).every((piece) => BASE64.test(piece));
}
