/**
 * @module bounce/verp — the VERP return path `b+{token}@{bounce_domain}`: one recipient row's id, signed (pure).
 *
 * token = the 20 base32 characters of the recipient id (mail/ids.ts) + 16 characters (80 bits) of
 * HMAC-SHA256(key, id), where key is the instance secret's "verp" key (mail/keys.ts): a key of its own, so a
 * token can never be replayed as another kind of signed value. The alphabet is lower-case Crockford base32,
 * which survives an MTA that lower-cases local parts (RFC 5321 §2.4 says they are case-sensitive, but many fold
 * them); a token is read case-insensitively. `b+` + 36 characters = 38 octets, under the 64 of RFC 5321 §4.5.3.1.1.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { RECIPIENT_ID_BODY, type RecipientId } from "../mail/ids.ts";
import { derivedKey } from "../mail/keys.ts";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
/** 10 bytes of the MAC, 16 base32 characters: guessing one takes 2^80 tries */
const MAC_BYTES = 10;
const ID_CHARS = 20;
const TOKEN = new RegExp(`^b\\+([${ALPHABET}]{${ID_CHARS}})([${ALPHABET}]{${(MAC_BYTES * 8) / 5}})$`);

export interface Verp {
  /** `b+{token}@{bounceDomain}` for this recipient row */
  verpAddress(recipientId: RecipientId, bounceDomain: string): string;
  /** The recipient row a `b+{token}` local part names, or null when it is not a token we signed. */
  recipientFromVerp(localPart: string): RecipientId | null;
}

export function verpCodec(instanceSecret: Buffer): Verp {
  const key = derivedKey(instanceSecret, "verp");
  const mac = (idBody: string) => base32(createHmac("sha256", key).update(idBody).digest().subarray(0, MAC_BYTES));
  return {
    verpAddress(recipientId, bounceDomain) {
      const body = RECIPIENT_ID_BODY.exec(recipientId)?.[1];
      if (!body) throw new Error(`not a recipient id: ${recipientId}`);
      return `b+${body}${mac(body)}@${bounceDomain}`;
    },
    recipientFromVerp(localPart) {
      const m = TOKEN.exec(localPart.toLowerCase());
      if (!m) return null;
      const [, body, given] = m as unknown as [string, string, string];
      const want = mac(body);
      return timingSafeEqual(Buffer.from(given), Buffer.from(want)) ? (`r${body}` as RecipientId) : null;
    },
  };
}

/** RFC 4648 base32 bit order over the Crockford alphabet; `bytes.length * 8` must be a multiple of 5. */
function base32(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}
