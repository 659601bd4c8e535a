/**
 * @module message/charset — text in a MIME part's declared charset, both ways: a part's bytes → string, and a
 * rewritten string → bytes in the same charset, or null when the charset cannot hold it (the caller then
 * switches that part to UTF-8). iconv-lite and encoding-japanese live here.
 */
import iconv from "iconv-lite";
import Encoding from "encoding-japanese";

export interface Codec {
  /** the charset the part is labelled with, lower-cased ("" when it names none) */
  label: string;
  decode(bytes: Buffer): string;
  /** null when the text has a character this charset cannot hold */
  encode(text: string): Buffer | null;
}

const UTF8 = /^utf-?8$/;
const ASCII = /^(?:us-?ascii|ascii|ansi_x3\.4-1968)$/;
/** iconv-lite has no ISO-2022-JP (stateful, escape-sequence based): encoding-japanese does it */
const ISO_2022_JP = /^(?:iso-?2022-?jp|csiso2022jp)$/;
/** iconv-lite codecs that are no charset a part may be written in (UTF-7 smuggles markup past filters) */
const REFUSED = /^(?:utf-?7|unicode-1-1-utf-7|csunicode11utf7|utf7-?imap|base64|hex|binary)$/;

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const utf8: Omit<Codec, "label"> = {
  decode: (bytes) => utf8Decoder.decode(bytes),
  encode: (text) => Buffer.from(text, "utf8"),
};

/** Every byte as the character with that code: exact both ways for any bytes. */
const latin1: Omit<Codec, "label"> = {
  decode: (bytes) => bytes.toString("latin1"),
  encode: (text) => (/[^\x00-\xff]/.test(text) ? null : Buffer.from(text, "latin1")),
};

const ascii: Omit<Codec, "label"> = {
  decode: (bytes) => bytes.toString("latin1"),
  encode: (text) => (/[^\x00-\x7f]/.test(text) ? null : Buffer.from(text, "latin1")),
};

const iso2022jp: Omit<Codec, "label"> = {
  decode: (bytes) => Encoding.convert(bytes, { to: "UNICODE", from: "JIS", type: "string" }),
  encode: (text) => {
    const bytes = Buffer.from(Encoding.convert(text, { to: "JIS", from: "UNICODE", type: "array" }));
    return iso2022jp.decode(bytes) === text ? bytes : null;
  },
};

function iconvCodec(name: string): Omit<Codec, "label"> {
  return {
    decode: (bytes) => iconv.decode(bytes, name, { stripBOM: false }),
    encode: (text) => {
      // iconv-lite writes a substitute for what the charset lacks: decoding back tells
      const bytes = iconv.encode(text, name, { addBOM: false });
      return iconv.decode(bytes, name, { stripBOM: false }) === text ? bytes : null;
    },
  };
}

/**
 * The codec for a part labelled `charset` (false: no charset parameter), or a reason it has none. Without a
 * label, or labelled US-ASCII (RFC 2045's default), bytes over 127 mean a sender that mislabelled its text:
 * read as UTF-8 when they are valid UTF-8, else byte for byte, so either way they go out as they came in.
 */
export function codecFor(charset: string | false, bytes: Buffer): Codec | { reason: string } {
  const label = (charset || "").trim().toLowerCase();
  const name = label || "us-ascii";
  if (UTF8.test(name)) return { label, ...utf8 };
  if (ASCII.test(name)) {
    if (!bytes.some((b) => b > 0x7f)) return { label, ...ascii };
    return { label, ...(isUtf8(bytes) ? utf8 : latin1) };
  }
  if (ISO_2022_JP.test(name)) return { label, ...iso2022jp };
  if (REFUSED.test(name) || !iconv.encodingExists(name)) return { reason: `charset ${JSON.stringify(charset)} is not supported` };
  return { label, ...iconvCodec(name) };
}

function isUtf8(bytes: Buffer): boolean {
  try {
    utf8Decoder.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
