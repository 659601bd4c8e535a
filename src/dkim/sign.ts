/**
 * @module dkim/sign — adds DKIM-Signature fields (RFC 6376) to a finished message: relaxed/relaxed, rsa-sha256 and
 * ed25519-sha256 (RFC 8463), From oversigned. The last change made to a message before it goes out.
 *
 * Which domain signs (d=): the domain of the From address if a key is configured for it, else that of the
 * envelope sender. From comes first because DMARC (RFC 7489 §3.1.1) passes only when d= is aligned with the
 * From domain; the envelope sender's domain is the fallback (a VERP return path, a sender domain with its own
 * key). For each of the two, the closest configured domain at or above it is used: a key for example.com also
 * signs mail from news.example.com, which DMARC's relaxed alignment (its default) accepts. Every key of the
 * chosen domain signs: an RSA and an Ed25519 key give two signatures, so receivers that know Ed25519 can use it
 * and the others still find the RSA one.
 *
 * mailauth's canonicalization does the header work (header canonicalization, formatting; the body hash is
 * dkim/body-hash.ts, the same hash made faster), but its
 * `dkimSign` names each present field once in h= and cannot oversign. Listing From once more than it occurs
 * (RFC 6376 §5.4.2, §8.15) makes a From added in transit break the signature instead of being shown to the
 * reader above the signed one, so this module calls the steps of mailauth's signer itself and appends that
 * extra From. The steps are those of mailauth 7.1.0 (pinned); the tests check every signature with
 * mailauth's verifier and with python3-dkim.
 */
import { createHash, sign as cryptoSign } from "node:crypto";
import { domainToASCII } from "node:url";
import addressparser from "nodemailer/lib/addressparser";
import { formatSignatureHeaderLine, getSigningHeaderLines, parseHeaders, type SigningHeaderLines } from "mailauth/lib/tools";
import { generateCanonicalizedHeader } from "mailauth/lib/dkim/header";
import { relaxedBodyHash } from "./body-hash.ts";
import type { DkimKey } from "./keys.ts";

/**
 * The fields signed when present. RFC 6376 §5.4.1's list of what a reader sees or what changes how the body is
 * read, plus List-Unsubscribe and List-Unsubscribe-Post, which RFC 8058 §4 requires to be signed for one-click
 * unsubscribe. Received, Return-Path and the like are left out: relays add and change them.
 */
export const SIGNED_FIELDS: readonly string[] = [
  "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
  "Reply-To", "In-Reply-To", "References", "List-Unsubscribe", "List-Unsubscribe-Post",
];
const FIELD_LIST = SIGNED_FIELDS.join(":");

export interface SignResult {
  /** the message with its signature fields on top; the same bytes as given when nothing signed */
  body: Buffer;
  /** the keys that signed, as `domain/selector`; empty when no key applies or the message has no From */
  signedWith: string[];
  /** each signature's a= (`rsa-sha256`, `ed25519-sha256`), in the order of `signedWith` */
  algorithms: string[];
}

export class DkimSigner {
  private readonly byDomain = new Map<string, DkimKey[]>();

  /** `now` gives the t= time (ms). */
  constructor(keys: readonly DkimKey[], private readonly now: () => number = Date.now) {
    for (const key of keys) {
      const list = this.byDomain.get(key.domain) ?? [];
      list.push(key);
      this.byDomain.set(key.domain, list);
    }
  }

  /** Whether any key is configured (when not, callers can skip the work). */
  get enabled(): boolean {
    return this.byDomain.size > 0;
  }

  /**
   * Signs `message` (CRLF line endings, as intake stores it) for the From domain or, failing that, the domain of
   * `envelopeFrom` ("" for the null sender). The message's own bytes follow the signature fields unchanged.
   */
  async sign(message: Buffer, envelopeFrom: string): Promise<SignResult> {
    if (!this.enabled) return { body: message, signedWith: [], algorithms: [] };
    const sep = message.indexOf("\r\n\r\n");
    const head = parseHeaders(sep < 0 ? message : message.subarray(0, sep + 2));
    const fromField = head.parsed.find((h) => h.key === "from");
    // RFC 6376 §5.4: From MUST be signed; without one there is nothing to sign for
    if (fromField === undefined) return { body: message, signedWith: [], algorithms: [] };
    const keys = this.keysFor([...fromDomains(fromField.line), domainOfAddress(envelopeFrom)]);
    if (keys.length === 0) return { body: message, signedWith: [], algorithms: [] };

    const bodyHash = relaxedBodyHash(sep < 0 ? Buffer.alloc(0) : message.subarray(sep + 4));
    const present = getSigningHeaderLines(head.parsed, FIELD_LIST);
    // the extra From stands for a field that does not exist, which verifiers hash as nothing (RFC 6376 §5.4.2)
    const lines: SigningHeaderLines = { keys: `${present.keys}: From`, headers: present.headers };
    const timestamp = Math.floor(this.now() / 1000);
    const fields = keys.map((key) => signatureField(key, lines, bodyHash, timestamp));
    return {
      body: Buffer.concat([Buffer.from(fields.join("")), message]),
      signedWith: keys.map((k) => `${k.domain}/${k.selector}`),
      algorithms: keys.map(algorithmOf),
    };
  }

  /** The keys of the first candidate domain (or its closest configured parent) that has any. */
  private keysFor(domains: readonly string[]): DkimKey[] {
    for (const domain of domains) {
      for (let d = domain; d !== ""; d = d.includes(".") ? d.slice(d.indexOf(".") + 1) : "") {
        const keys = this.byDomain.get(d);
        if (keys) return keys;
      }
    }
    return [];
  }
}

function algorithmOf(key: DkimKey): "rsa-sha256" | "ed25519-sha256" {
  return key.algorithm === "rsa" ? "rsa-sha256" : "ed25519-sha256";
}

/** One DKIM-Signature field, with its CRLF. Ed25519 signs the SHA-256 of the data (RFC 8463 §3). */
function signatureField(key: DkimKey, lines: SigningHeaderLines, bodyHash: string, timestamp: number): string {
  const rsa = key.algorithm === "rsa";
  const { canonicalizedHeader, dkimHeaderOpts } = generateCanonicalizedHeader("DKIM", lines, {
    signingDomain: key.domain,
    selector: key.selector,
    algorithm: algorithmOf(key),
    canonicalization: "relaxed/relaxed",
    bodyHash,
    timestamp,
  });
  const signature = rsa
    ? cryptoSign("sha256", canonicalizedHeader, key.privateKey)
    : cryptoSign(null, createHash("sha256").update(canonicalizedHeader).digest(), key.privateKey);
  return `${formatSignatureHeaderLine("DKIM", { ...dkimHeaderOpts, b: signature.toString("base64") }, true)}\r\n`;
}

/** The domains of the From field's addresses (A-labels, lower-case), in order. */
function fromDomains(field: Buffer): string[] {
  const raw = field.toString("utf8");
  const value = raw.slice(raw.indexOf(":") + 1).replace(/\r\n/g, "");
  return addressparser(value, { flatten: true }).map((a) => domainOfAddress(a.address ?? ""));
}

function domainOfAddress(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : domainToASCII(address.slice(at + 1).trim()).toLowerCase();
}
