/**
 * @module mail/address — envelope addresses, one vocabulary for SMTP, the API, intake, the queue and suppressions (pure).
 *
 * `parseAddress` checks an address (RFC 5321 §4.1.2 syntax with RFC 6531 UTF-8, §4.5.3.1 octet lengths) and
 * gives it two forms:
 * - **canonical** (`Address.canonical`): what is stored, delivered to and shown. The local part as given, except
 *   that quotes it does not need are dropped (`"john"@x` → `john@x`, while `"john doe"@x` keeps them, with only
 *   `"` and `\` escaped inside); the domain lower-case in A-labels (`Bücher.Example` → `xn--bcher-kva.example`,
 *   through IDNA's mapping in node:url `domainToASCII`), the DNS form routing, throttling and a next hop without
 *   SMTPUTF8 need. Lengths are counted on this form, the one we send on.
 * - **key** (`Address.key`, `addressKey`): the canonical form with the local part lower-cased too. RFC 5321 lets
 *   a receiving server treat `Foo` and `foo` as different mailboxes, but practically none does, and providers
 *   (Postmark, Mailgun, SES) match suppressions case-insensitively; so two addresses with one key are one
 *   mailbox for deduplication and for the suppression list.
 *
 * Refused: CR, LF and other control characters (C0, DEL, C1) and invisible ones (U+200B, U+2060, U+FEFF) anywhere,
 * as smtp-server refuses them; an unquoted local part that is not a dot-string (`.a`, `a.`, `a..b`, `a b`);
 * the empty quoted local part `""`; a domain that is not host-name syntax or an `[IPv4]`/`[IPv6:…]` literal.
 * Routing syntax (`%`, `!`, `@` inside quotes) is plain characters: the domain follows the last unquoted `@`.
 */
import { isIP } from "node:net";
import { domainToASCII } from "node:url";
import { SmtpError } from "./errors.ts";

/** RFC 5321 §4.5.3.1: local part 64 octets, domain 255, path (address with its angle brackets) 256. */
export const MAX_LOCAL_PART = 64;
export const MAX_DOMAIN = 255;
export const MAX_PATH = 256;

export interface Address {
  /** the local part in canonical form: quoted only when it must be */
  local: string;
  /** lower-case A-labels, or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) */
  domain: string;
  /** `local@domain`: what is stored and delivered to */
  canonical: string;
  /** the canonical form lower-cased: one mailbox, one key */
  key: string;
}

export type ParsedAddress = ({ ok: true } & Address) | { ok: false; reason: string };

// RFC 5322 atext, plus any non-ASCII character (RFC 6531 extends atext with UTF8-non-ascii)
const ATOM = "[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~\\u0080-\\u{10ffff}]+";
const DOT_STRING = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`, "u");
/** C0 controls (CR and LF among them), DEL, C1 controls and invisible characters: never part of an address */
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff]/;
/** a label as written: letters of any script, digits, hyphens (IDNA turns it into an A-label) */
const LABEL_AS_GIVEN = /^(?!-)[\p{L}\p{N}\p{M}-]{1,63}(?<!-)$/u;
/** a label after IDNA: letters, digits, hyphen (RFC 1035 §2.3.1, RFC 5890 A-labels) */
const LDH_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

const octets = (s: string) => Buffer.byteLength(s, "utf8");
const fail = (reason: string): ParsedAddress => ({ ok: false, reason });

/**
 * Answers already given, by input: one submission parses each of its addresses several times (the API's check,
 * intake's canonical form and deduplication, the sending domains, the suppression key, the recipient row), and
 * IDNA is the costly part. Frozen, so no caller can change another's answer; bounded by starting over when full.
 */
const parsed = new Map<string, ParsedAddress>();
const PARSED_MAX = 10_000;

/** Checks `input` (no angle brackets, not trimmed) and returns its canonical form and key, or why not. */
export function parseAddress(input: string): ParsedAddress {
  let p = parsed.get(input);
  if (p === undefined) {
    if (parsed.size >= PARSED_MAX) parsed.clear();
    p = Object.freeze(parseUncached(input));
    parsed.set(input, p);
  }
  return p;
}

function parseUncached(input: string): ParsedAddress {
  if (/[\r\n]/.test(input)) return fail("CR or LF in address");
  if (UNSAFE.test(input)) return fail("control character in address");
  const split = splitLocal(input);
  if (typeof split === "string") return fail(split);
  const domain = canonicalDomain(split.rest);
  if (domain === null) return fail(`${JSON.stringify(split.rest)} is not a valid domain`);
  const canonical = `${split.local}@${domain}`;
  if (octets(split.local) > MAX_LOCAL_PART) return fail(`local part longer than ${MAX_LOCAL_PART} octets`);
  if (octets(domain) > MAX_DOMAIN) return fail(`domain longer than ${MAX_DOMAIN} octets`);
  if (octets(canonical) + 2 > MAX_PATH) return fail(`path longer than ${MAX_PATH} octets`);
  return { ok: true, local: split.local, domain, canonical, key: canonical.toLowerCase() };
}

/** The canonical form, or null when `input` is no valid address. */
export function canonicalAddress(input: string): string | null {
  const p = parseAddress(input);
  return p.ok ? p.canonical : null;
}

/**
 * The comparison key of an address. Total, so anything stored can be looked up: a string that does not parse
 * (a row written by an older version, the bare `postmaster`) is keyed by its trimmed lower-case self.
 */
export function addressKey(input: string): string {
  const p = parseAddress(input);
  return p.ok ? p.key : input.trim().toLowerCase();
}

/** Is the domain of this (canonical) address an address literal, `[192.0.2.1]` or `[IPv6:…]` (RFC 5321 §4.1.3)? */
export function isAddressLiteral(address: string): boolean {
  return domainOf(address).startsWith("[");
}

/** The domain of a canonical address (what follows the last `@`), lower-cased; "" when there is none. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : address.slice(at + 1).toLowerCase();
}

/** An envelope address for SMTP: the parsed address, or the 501 for MAIL (5.1.7) or RCPT (5.1.3). */
export function checkAddress(input: string, enhanced: "5.1.3" | "5.1.7"): Address | SmtpError {
  const p = parseAddress(input);
  if (!p.ok) return new SmtpError(501, enhanced, `bad address syntax: ${p.reason}`);
  return { local: p.local, domain: p.domain, canonical: p.canonical, key: p.key };
}

/** The canonical local part and what follows its `@`, or why the local part is malformed. */
function splitLocal(input: string): { local: string; rest: string } | string {
  if (!input.startsWith('"')) {
    const at = input.indexOf("@");
    if (at < 0) return "expected local-part@domain";
    const local = input.slice(0, at);
    if (!DOT_STRING.test(local)) return `${JSON.stringify(local)} is not a valid local part (quote it)`;
    return { local, rest: input.slice(at + 1) };
  }
  // RFC 5321 Quoted-string: qtextSMTP (printable ASCII but " and \) or quoted-pairSMTP (\ and printable ASCII)
  let content = "";
  let i = 1;
  for (; i < input.length && input[i] !== '"'; i++) {
    if (input[i] === "\\") {
      i++;
      if (i >= input.length) break;
    }
    content += input[i];
  }
  if (i >= input.length) return "unterminated quoted local part";
  if (input[i + 1] !== "@") return "expected @ after the quoted local part";
  if (content === "") return "empty local part";
  const local = DOT_STRING.test(content) ? content : `"${content.replace(/["\\]/g, "\\$&")}"`;
  return { local, rest: input.slice(i + 2) };
}

/**
 * canonicalDomain's answers for the domains seen lately: a message's domains are parsed again at each step (MAIL,
 * RCPT, intake, queue, delivery, suppressions), and mail goes to few domains. The answer depends on the domain
 * alone, so nothing makes an entry stale; the map is emptied when full, so a flood of distinct domains costs
 * only the map's bound in memory.
 */
const domainCache = new Map<string, string | null>();
export const DOMAIN_CACHE_SIZE = 4096;

/** Lower-case A-labels, or the normalised address literal; null when `domain` is neither. */
function canonicalDomain(domain: string): string | null {
  let answer = domainCache.get(domain);
  if (answer === undefined) {
    if (domainCache.size >= DOMAIN_CACHE_SIZE) domainCache.clear();
    domainCache.set(domain, (answer = checkDomain(domain)));
  }
  return answer;
}

export function domainCacheSize(): number {
  return domainCache.size;
}

function checkDomain(domain: string): string | null {
  if (domain.startsWith("[") && domain.endsWith("]")) {
    const inner = domain.slice(1, -1);
    if (/^ipv6:/i.test(inner)) return isIP(inner.slice(5)) === 6 ? `[IPv6:${inner.slice(5).toLowerCase()}]` : null;
    return isIP(inner) === 4 ? domain : null;
  }
  // checked before IDNA: domainToASCII would also decode %41 and map other punctuation
  if (!domain.split(".").every((l) => LABEL_AS_GIVEN.test(l))) return null;
  const ascii = domainToASCII(domain);
  return ascii && ascii.split(".").every((l) => LDH_LABEL.test(l)) ? ascii : null;
}
