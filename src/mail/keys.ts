/**
 * @module mail/keys — keys derived from the instance secret (data_dir/secret), one per purpose: a value signed
 * for one use (a VERP return path, a click, an open, an unsubscribe) can never be replayed as another.
 *
 * key = HMAC-SHA256(instance secret, "outpost {purpose} v1"), the HKDF-Expand step of RFC 5869 with the secret as
 * its pseudorandom key (the secret is 32 random bytes, so no extract step is needed). Replacing the secret
 * changes every derived key: every token issued before stops verifying.
 */
import { createHmac } from "node:crypto";

export type KeyPurpose = "verp" | "click" | "open" | "unsubscribe";

export function derivedKey(instanceSecret: Buffer, purpose: KeyPurpose): Buffer {
  return createHmac("sha256", instanceSecret).update(`outpost ${purpose} v1`).digest();
}
