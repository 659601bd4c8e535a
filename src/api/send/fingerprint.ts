/**
 * @module api/send/fingerprint — the SHA-256 of a send's normalised fields, stored with its idempotency key: a
 * repeat with the same key is the same request only when its fingerprint matches (else 409), as Stripe does.
 */
import type { SendBody } from "./model.ts";
import { optionsOf } from "./normalize.ts";

/**
 * Hashes the fields as read (canonical names, aliases and case resolved, nulls dropped), keys in sorted order, the
 * options as the booleans they mean, files by name, type and bytes. The key itself is left out: it is how the
 * repeat finds the first request, not part of what is sent.
 */
export async function fingerprintOf(fields: SendBody): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  const { idempotency_key: _key, inlinizecss: _i, clicktracking: _c, openstracking: _o, bouncetracking: _b, unsubscribe: _u, ...rest } = fields;
  await feed(hasher, { ...rest, options: optionsOf(fields) });
  return hasher.digest("hex");
}

/** Writes `value` unambiguously: each part is tagged with its kind and, for text, its length. */
async function feed(hasher: Bun.CryptoHasher, value: unknown): Promise<void> {
  if (value instanceof Blob) {
    const name = value instanceof File ? value.name : "";
    hasher.update(`F${name.length}:${name}${value.type.length}:${value.type}${value.size}:`);
    hasher.update(new Uint8Array(await value.arrayBuffer()));
  } else if (Array.isArray(value)) {
    hasher.update(`A${value.length}:`);
    for (const item of value) await feed(hasher, item);
  } else if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    hasher.update(`O${entries.length}:`);
    for (const [k, v] of entries) {
      await feed(hasher, k);
      await feed(hasher, v);
    }
  } else {
    const text = typeof value === "string" ? `S${value.length}:${value}` : `V${String(value)}`;
    hasher.update(text);
  }
}
