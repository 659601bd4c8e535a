/**
 * @module dkim/mailauth-lib — types for the parts of mailauth's DKIM signer that dkim/sign.ts drives directly
 * (mailauth ships no declarations for them). They match mailauth 7.1.0, the pinned version.
 */

declare module "mailauth/lib/tools" {
  /** One header field as mailauth parsed it: `key` lower-case, `casedKey` as written, `line` the raw field without its CRLF. */
  export interface ParsedHeaderLine {
    key: string;
    casedKey: string;
    line: Buffer;
  }
  export interface ParsedHeaders {
    parsed: ParsedHeaderLine[];
    original: Buffer;
  }
  /** The fields to sign (bottom-up, as RFC 6376 §5.4.2 has verifiers pick them) and their names for h=, joined by ": ". */
  export interface SigningHeaderLines {
    keys: string;
    headers: ParsedHeaderLine[];
  }
  export function parseHeaders(head: Buffer): ParsedHeaders;
  /** `fieldNames`: colon-separated names; every present field with one of those names is listed once. */
  export function getSigningHeaderLines(parsed: ParsedHeaderLine[], fieldNames: string): SigningHeaderLines;
  /** Renders tag values as a header field (`folded`: wrapped at 76 columns, lines joined by CRLF + space). */
  export function formatSignatureHeaderLine(type: "DKIM", values: Record<string, string | number | boolean | undefined>, folded: boolean): string;
}

declare module "mailauth/lib/dkim/body" {
  /** RFC 6376 §3.4.3 / §3.4.4 body canonicalization feeding a hash. */
  export interface BodyHasher {
    update(chunk: Buffer): void;
    digest(encoding: "base64"): string;
  }
  /** `maxBodyLength` false: the whole body (no l= tag). */
  export function dkimBody(canonicalization: "relaxed" | "simple", hashAlgo: "sha256", maxBodyLength: false): BodyHasher;
}

declare module "mailauth/lib/dkim/header" {
  import type { SigningHeaderLines } from "mailauth/lib/tools";

  export interface CanonicalizeOptions {
    signingDomain: string;
    selector: string;
    algorithm: "rsa-sha256" | "ed25519-sha256";
    canonicalization: "relaxed/relaxed";
    bodyHash: string;
    /** the t= value in seconds */
    timestamp: number;
  }
  /** The bytes to sign (the signed fields, then the signature field with an empty b=), and its tags for formatting. */
  export function generateCanonicalizedHeader(
    type: "DKIM",
    lines: SigningHeaderLines,
    options: CanonicalizeOptions,
  ): { canonicalizedHeader: Buffer; dkimHeaderOpts: Record<string, string | number | boolean | undefined> };
}
