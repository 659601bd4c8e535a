/**
 * @module smtp/relay — may this envelope address be used, and may this RCPT relay? (pure)
 *
 * Relaying needs an authenticated session or a client in trusted_networks. The one exception is
 * tracking.bounce_domain, which anyone may mail (that is how bounces come back), and where only
 * `b+{token}` (with a token we signed), `postmaster` and `abuse` exist. `%`, `!`, source routes and quoted local parts are
 * plain characters here: the domain after the last unquoted `@` is the only routing information.
 */
import { isIP } from "node:net";
import { domainToASCII } from "node:url";
import { SmtpError } from "../mail/errors.ts";

/** RFC 5321 §4.5.3.1: local part 64 octets, domain 255, path (address with its angle brackets) 256. */
export const MAX_LOCAL_PART = 64;
export const MAX_DOMAIN = 255;
export const MAX_PATH = 256;

export interface AddressParts {
  local: string;
  domain: string;
}

export interface RelayPolicy {
  /** "" when no bounce domain is configured */
  bounceDomain: string;
  /** is this `b+…` local part a token we signed? (bounce/verp.ts through bounce/ingest.ts) */
  isValidBounceToken: (localPart: string) => boolean;
}

export interface RelayClient {
  authenticated: boolean;
  /** the client address is in smtp.trusted_networks */
  trusted: boolean;
}

/** What a recipient is: mail to relay, or mail consumed at the bounce domain. One transaction holds one kind. */
export type RecipientKind = "relay" | "bounce_domain";

export type RcptVerdict =
  | { ok: true; address: string; kind: RecipientKind }
  | { ok: false; error: SmtpError };

const UNQUOTED_LOCAL = /^[^\s"@<>()[\]\\,;:]+$/u;
const LABEL = /^(?!-)[\p{L}\p{N}-]{1,63}(?<!-)$/u;

/**
 * Splits an address at the `@` that starts its domain. A quoted local part may contain `@`;
 * an unquoted one may not (so "a@b@c" is refused, never read as routing). Null when malformed.
 */
export function splitAddress(address: string): AddressParts | null {
  let at: number;
  if (address.startsWith('"')) {
    let i = 1;
    for (; i < address.length && address[i] !== '"'; i++) if (address[i] === "\\") i++;
    if (i >= address.length) return null;
    at = i + 1;
    if (address[at] !== "@") return null;
  } else {
    at = address.indexOf("@");
    if (at <= 0 || address.indexOf("@", at + 1) >= 0) return null;
    if (!UNQUOTED_LOCAL.test(address.slice(0, at))) return null;
  }
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (local === '""') return null;
  return isDomainSyntax(domain) ? { local, domain } : null;
}

/** A host name (A-labels or U-labels; smtp-server hands IDNs over decoded) or an address literal. */
export function isDomainSyntax(domain: string): boolean {
  if (domain.startsWith("[") && domain.endsWith("]")) {
    const inner = domain.slice(1, -1);
    if (/^ipv6:/i.test(inner)) return isIP(inner.slice(5)) === 6;
    return isIP(inner) === 4;
  }
  return domain.split(".").every((l) => LABEL.test(l));
}

const octets = (s: string) => Buffer.byteLength(s, "utf8");

/** Syntax and RFC 5321 lengths of a non-null envelope address; `enhanced` is 5.1.3 (RCPT) or 5.1.7 (MAIL). */
export function checkAddress(address: string, enhanced: "5.1.3" | "5.1.7"): AddressParts | SmtpError {
  const bad = (why: string) => new SmtpError(501, enhanced, `bad address syntax: ${why}`);
  if (octets(address) + 2 > MAX_PATH) return bad(`path longer than ${MAX_PATH} octets`);
  const parts = splitAddress(address);
  if (!parts) return bad("expected local-part@domain");
  if (octets(parts.local) > MAX_LOCAL_PART) return bad(`local part longer than ${MAX_LOCAL_PART} octets`);
  if (octets(parts.domain) > MAX_DOMAIN) return bad(`domain longer than ${MAX_DOMAIN} octets`);
  return parts;
}

/**
 * The address with its domain in A-labels. smtp-server hands over IDN domains decoded
 * ("xn--bcher-kva.example" arrives as "bücher.example"); the queue keeps the DNS form, which is
 * what routing, throttling and a non-SMTPUTF8 next hop need. The local part is left alone.
 */
export function withAsciiDomain(address: string): string {
  const at = address.lastIndexOf("@");
  if (at < 0 || /^[\x00-\x7f]*$/.test(address.slice(at + 1))) return address;
  const ascii = domainToASCII(address.slice(at + 1));
  return ascii ? `${address.slice(0, at + 1)}${ascii}` : address;
}

const BOUNCE_MAILBOXES = new Set(["postmaster", "abuse"]);

/**
 * The decision for one RCPT TO address. `transaction` is the kind of the recipients the transaction already has:
 * mail for the bounce domain is consumed here and everything else relayed, so one message cannot be both. The
 * first recipient fixes the kind; one of the other kind gets 452 4.5.3, which a client takes as "send this one in
 * a later transaction" (RFC 5321 §4.5.3.1.10), as it does for "too many recipients".
 */
export function decideRecipient(address: string, client: RelayClient, policy: RelayPolicy, transaction?: RecipientKind): RcptVerdict {
  const verdict = decideAlone(address, client, policy);
  if (!verdict.ok || transaction === undefined || verdict.kind === transaction) return verdict;
  const which = verdict.kind === "bounce_domain" ? "mail for the bounce domain" : "mail for other domains";
  return refuse(452, "4.5.3", `<${address}>: ${which} must be sent in a separate transaction`);
}

/** Is this (accepted) recipient at the bounce domain? */
export function kindOf(address: string, bounceDomain: string): RecipientKind {
  const domain = address.slice(address.lastIndexOf("@") + 1).toLowerCase();
  return bounceDomain !== "" && domain === bounceDomain.toLowerCase() ? "bounce_domain" : "relay";
}

function decideAlone(address: string, client: RelayClient, policy: RelayPolicy): RcptVerdict {
  const bounceDomain = policy.bounceDomain.toLowerCase();
  // RFC 5321 §4.1.1.3: the domainless <postmaster> must be accepted; ours lives at the bounce domain
  if (address.toLowerCase() === "postmaster") {
    if (bounceDomain) return { ok: true, address: `postmaster@${bounceDomain}`, kind: "bounce_domain" };
    return refuse(550, "5.1.1", "no such mailbox: write to postmaster@ the domain in question");
  }
  const parts = checkAddress(address, "5.1.3");
  if (parts instanceof SmtpError) return { ok: false, error: parts };
  if (bounceDomain && parts.domain.toLowerCase() === bounceDomain) {
    const local = parts.local;
    if (BOUNCE_MAILBOXES.has(local.toLowerCase()) || (/^b\+/i.test(local) && policy.isValidBounceToken(local))) {
      return { ok: true, address, kind: "bounce_domain" };
    }
    return refuse(550, "5.1.1", `<${address}>: no such mailbox`);
  }
  if (client.authenticated || client.trusted) return { ok: true, address, kind: "relay" };
  return refuse(554, "5.7.1", `<${address}>: relaying denied`);
}

function refuse(code: number, enhanced: string, message: string): RcptVerdict {
  return { ok: false, error: new SmtpError(code, enhanced, message) };
}
