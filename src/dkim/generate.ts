/**
 * @module dkim/generate — makes a DKIM key pair and the DNS TXT record that publishes its public half
 * (RFC 6376 §3.6.1; Ed25519 as RFC 8463 §4.2 has it).
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import type { DkimAlgorithm } from "./keys.ts";

export const DKIM_ALGORITHMS: readonly DkimAlgorithm[] = ["rsa", "ed25519"];
export const RSA_BITS = 2048;

export interface GeneratedKey {
  algorithm: DkimAlgorithm;
  /** PKCS#8 PEM, what `[[dkim]] private_key_file` reads */
  privatePem: string;
  /** the TXT record's text, e.g. `v=DKIM1; k=rsa; p=MIIB…` */
  record: string;
}

export function generateDkimKey(algorithm: DkimAlgorithm): GeneratedKey {
  const { privateKey, publicKey } = algorithm === "rsa"
    ? generateKeyPairSync("rsa", { modulusLength: RSA_BITS })
    : generateKeyPairSync("ed25519");
  return {
    algorithm,
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    record: dkimRecord(algorithm, publicKey),
  };
}

/**
 * The TXT record for a public key. RSA: p= is the DER SubjectPublicKeyInfo, as every DKIM tool publishes it.
 * Ed25519: p= is the bare 32-byte key (RFC 8463 §4.2), not the SubjectPublicKeyInfo around it.
 */
export function dkimRecord(algorithm: DkimAlgorithm, publicKey: KeyObject): string {
  const p = algorithm === "rsa"
    ? publicKey.export({ type: "spki", format: "der" }).toString("base64")
    : Buffer.from(String(publicKey.export({ format: "jwk" }).x), "base64url").toString("base64");
  return `v=DKIM1; k=${algorithm}; p=${p}`;
}

/** The record as zone-file character-strings: a TXT string holds at most 255 octets (RFC 1035 §3.3.14). */
export function txtStrings(record: string, max = 255): string[] {
  const out: string[] = [];
  for (let i = 0; i < record.length; i += max) out.push(record.slice(i, i + max));
  return out;
}

/** `rsa202612` / `ed202612`: the algorithm and the month (UTC), so a yearly or monthly rotation gets a fresh selector. */
export function defaultSelector(algorithm: DkimAlgorithm, now: Date): string {
  const month = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
  return `${algorithm === "rsa" ? "rsa" : "ed"}${month}`;
}
