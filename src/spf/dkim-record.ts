/**
 * @module spf/dkim-record — is a configured `[[dkim]]` key published where receivers look for it
 * (`SELECTOR._domainkey.DOMAIN`, RFC 6376 §3.6.2.1), and is it the public half of the key outpost signs with?
 *
 * The published key is compared as a key, not as text: an RSA key may be published as a SubjectPublicKeyInfo (what
 * every tool writes) or a bare RSAPublicKey, in any number of TXT strings. RSA keys under 1024 bits are refused by
 * verifiers (RFC 8301 §3.2), on either side.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { DkimKeyConfig } from "../config/schema.ts";
import { dkimRecord } from "../dkim/generate.ts";
import { MIN_RSA_BITS, parsePrivateKey, type ParsedKey } from "../dkim/keys.ts";
import type { DnsLookup } from "../dns/lookup.ts";
import type { TxtRecord } from "./record.ts";

export type SelectorResult = "pass" | "missing" | "mismatch" | "weak" | "invalid" | "temperror";

export interface SelectorCheck {
  selector: string;
  /** where the key is published */
  name: string;
  result: SelectorResult;
  /** RSA modulus length of the configured key; 256 for Ed25519; null when it could not be read or used */
  bits: number | null;
  reason: string;
  /** the record to publish for the configured key; null when the key file cannot be read */
  expected: TxtRecord | null;
}

export async function checkSelector(key: DkimKeyConfig, lookup: DnsLookup, readKey = (path: string) => readFileSync(path, "utf8")): Promise<SelectorCheck> {
  const name = `${key.selector}._domainkey.${key.domain}`;
  const base = { selector: key.selector, name };
  let parsed: ParsedKey;
  try {
    // an RSA key under 1024 bits is refused here, as `serve` refuses it (dkim/keys.ts)
    parsed = parsePrivateKey(readKey(key.private_key_file));
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return { ...base, result: "invalid", bits: null, reason: `the configured key ${key.private_key_file} cannot sign: ${why}`, expected: null };
  }
  const ours = createPublicKey(parsed.privateKey);
  const bits = parsed.bits;
  const expected = { name, value: dkimRecord(parsed.algorithm, ours) };
  const done = (result: SelectorResult, reason: string): SelectorCheck => ({ ...base, result, bits, reason, expected });
  const published = await publishedRecords(name, lookup);
  if (published === "temperror") return done("temperror", `DNS did not answer for ${name}; try again later`);
  if (published.length === 0) return done("missing", `no DKIM key is published at ${name}`);
  if (published.length > 1) return done("invalid", `${published.length} TXT records at ${name}; receivers need exactly one`);
  return compare(published[0]!, ours, bits, done);
}

function compare(record: string, ours: KeyObject, bits: number, done: (r: SelectorResult, why: string) => SelectorCheck): SelectorCheck {
  const tags = tagList(record);
  const p = (tags.get("p") ?? "").replace(/\s+/g, "");
  if (p === "") return done("missing", "the published record has an empty p=, which means the key was revoked (RFC 6376 §3.6.1)");
  const theirs = publicKeyOf(Buffer.from(p, "base64"), tags.get("k") ?? "rsa");
  if (!theirs) return done("invalid", "the published p= is not a public key");
  if (theirs.asymmetricKeyType === "rsa" && bitsOf(theirs) < MIN_RSA_BITS) {
    return done("weak", `the published key has ${bitsOf(theirs)} bits; receivers ignore RSA keys under ${MIN_RSA_BITS} bits (RFC 8301)`);
  }
  const der = (k: KeyObject) => k.export({ type: "spki", format: "der" });
  if (!der(theirs).equals(der(ours))) return done("mismatch", "the published key is not the public half of the configured private key");
  return done("pass", `the published key matches the configured ${ours.asymmetricKeyType === "rsa" ? `${bits}-bit RSA` : "Ed25519"} key`);
}

/** The record's strings joined (RFC 6376 §3.6.2.2), or "temperror" when DNS did not answer. */
async function publishedRecords(name: string, lookup: DnsLookup): Promise<string[] | "temperror"> {
  try {
    return ((await lookup(name, "TXT")) as string[][]).map((strings) => strings.join(""));
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === "ENOTFOUND" || code === "ENODATA" ? [] : "temperror";
  }
}

/** RFC 6376 §3.2 tag=value list; names compared lower-case, values trimmed. */
function tagList(record: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of record.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return tags;
}

/** k=rsa: SubjectPublicKeyInfo or a bare RSAPublicKey; k=ed25519: the 32-octet key (RFC 8463 §4.2). */
function publicKeyOf(der: Buffer, k: string): KeyObject | null {
  const tries: Parameters<typeof createPublicKey>[0][] =
    k.toLowerCase() === "ed25519"
      ? [{ key: { kty: "OKP", crv: "Ed25519", x: der.toString("base64url") }, format: "jwk" }]
      : [{ key: der, format: "der", type: "spki" }, { key: der, format: "der", type: "pkcs1" }];
  for (const t of tries) {
    try {
      return createPublicKey(t);
    } catch {
      // not this encoding; the next one, or null
    }
  }
  return null;
}

function bitsOf(k: KeyObject): number {
  return k.asymmetricKeyType === "rsa" ? (k.asymmetricKeyDetails?.modulusLength ?? 0) : 256;
}
