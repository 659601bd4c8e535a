/**
 * @module dkim/keys — reads the `[[dkim]]` private keys when `serve` starts: PEM RSA (PKCS#8 or PKCS#1, at least
 * 1024 bits) or Ed25519 (PKCS#8, RFC 8463). A key that cannot sign is a ConfigError naming `dkim[N].private_key_file`.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "../config/errors.ts";
import type { DkimKeyConfig } from "../config/schema.ts";
import type { Logger } from "../observe/log.ts";

export type DkimAlgorithm = "rsa" | "ed25519";

/** One signing key, ready to use. */
export interface DkimKey {
  /** the d= domain, lower-case */
  domain: string;
  /** the s= selector: the key is published at `selector._domainkey.domain` */
  selector: string;
  algorithm: DkimAlgorithm;
  /** the RSA modulus length; 256 for Ed25519 */
  bits: number;
  privateKey: KeyObject;
}

/** RFC 8301 §3.2: verifiers MUST NOT accept signatures made with shorter RSA keys. */
export const MIN_RSA_BITS = 1024;
/** RFC 8301 §3.2 says signers SHOULD use at least this; many receivers already count shorter keys against a sender. */
export const RECOMMENDED_RSA_BITS = 2048;

export interface ParsedKey {
  algorithm: DkimAlgorithm;
  bits: number;
  privateKey: KeyObject;
}

/**
 * Parses one PEM private key, or throws an Error whose message says what is wrong in words an operator can act on
 * (the crypto library's own messages, such as "NO_START_LINE", do not).
 */
export function parsePrivateKey(pem: string): ParsedKey {
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1];
  if (label === undefined) throw new Error("not a PEM key (no -----BEGIN …----- line)");
  if (label === "ENCRYPTED PRIVATE KEY" || /Proc-Type:\s*4,ENCRYPTED/.test(pem)) {
    throw new Error("the key is encrypted; store it unencrypted, readable only by outpost (openssl pkey -in KEY -out KEY.pem)");
  }
  if (label.endsWith("PUBLIC KEY") || label === "CERTIFICATE") throw new Error(`holds a ${label.toLowerCase()}, not the private key`);
  if (label !== "PRIVATE KEY" && label !== "RSA PRIVATE KEY") {
    throw new Error(`unsupported key type "${label}"; DKIM signs with RSA or Ed25519 keys (outpost dkim generate makes one)`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: "pem" });
  } catch (e) {
    throw new Error(`malformed ${label} PEM: ${e instanceof Error ? e.message : String(e)}`);
  }
  const type = privateKey.asymmetricKeyType;
  if (type === "ed25519") return { algorithm: "ed25519", bits: 256, privateKey };
  if (type !== "rsa") throw new Error(`unsupported key type ${type ?? "unknown"}; DKIM signs with RSA or Ed25519 keys`);
  const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw new Error(`RSA key of ${bits} bits; receivers refuse DKIM keys under ${MIN_RSA_BITS} bits (RFC 8301)`);
  return { algorithm: "rsa", bits, privateKey };
}

/**
 * Reads and parses every configured key. `configFile` labels errors as config/load does (the file, or
 * "<defaults>"); an RSA key under 2048 bits is used, with a warning in the log.
 */
export function loadDkimKeys(entries: readonly DkimKeyConfig[], configFile: string | null, log: Pick<Logger, "warn">): DkimKey[] {
  return entries.map((entry, i) => {
    const key = `dkim[${i}].private_key_file`;
    const fail = (problem: string) => new ConfigError(configFile ?? "<defaults>", key, `${entry.private_key_file}: ${problem}`);
    let pem: string;
    try {
      pem = readFileSync(entry.private_key_file, "utf8");
    } catch (e) {
      throw fail(`cannot read: ${e instanceof Error ? e.message : String(e)}`);
    }
    let parsed: ParsedKey;
    try {
      parsed = parsePrivateKey(pem);
    } catch (e) {
      throw fail(e instanceof Error ? e.message : String(e));
    }
    if (parsed.algorithm === "rsa" && parsed.bits < RECOMMENDED_RSA_BITS) {
      log.warn("dkim_key_weak", {
        domain: entry.domain, selector: entry.selector, bits: parsed.bits, file: entry.private_key_file,
        hint: `make a ${RECOMMENDED_RSA_BITS}-bit key under a new selector: outpost dkim generate ${entry.domain}`,
      });
    }
    return { domain: entry.domain, selector: entry.selector, ...parsed };
  });
}
