/** @module intake/policy — what any submission must satisfy, whichever door it came in by. */
import type { Authors } from "../message/authors.ts";
import { domainOf, isAddressLiteral, parseAddress } from "../mail/address.ts";
import { SmtpError } from "../mail/errors.ts";
import type { MessageOptions } from "../queue/enqueue.ts";

/** A refusal at intake, with its meaning for both SMTP and HTTP. */
export class IntakeError extends SmtpError {
  constructor(
    code: number,
    enhanced: string,
    message: string,
    readonly httpStatus: 400 | 403 | 413 | 503,
    readonly field?: string,
    cause?: unknown,
  ) {
    super(code, enhanced, message, cause);
  }
}

export interface PolicyLimits {
  maxMessageSize: number;
  maxRecipients: number;
  /** most `Received` fields a stored message may have, ours included (`smtp.max_hops`) */
  maxHops: number;
  /** `smtp.allow_address_literals`; absent: false */
  allowAddressLiterals?: boolean;
}

/** Is `domain` (lower-case A-labels) one of `domains`: listed itself, or below a listed "*.parent"? */
export function domainAllowed(domains: readonly string[], domain: string): boolean {
  return domains.some((d) => (d.startsWith("*.") ? domain.endsWith(d.slice(1)) : d === domain));
}

/** May a user whose allowed domains are `domains` (empty = any) use this envelope sender? */
export function senderAllowed(domains: readonly string[], envelopeFrom: string): boolean {
  if (domains.length === 0 || envelopeFrom === "") return domains.length === 0;
  return domainAllowed(domains, domainOf(envelopeFrom));
}

export function checkSender(domains: readonly string[] | null, envelopeFrom: string): void {
  if (domains && !senderAllowed(domains, envelopeFrom)) {
    throw new IntakeError(553, "5.7.1", `sender <${envelopeFrom}> not allowed for this user`, 403, "envelope");
  }
}

/**
 * A user limited to some domains may only name them as the author too (From, and Sender, RFC 5322 §3.6.2): the
 * header fields are what a reader sees and what DMARC judges, so a free From would let the user write as anyone.
 * An empty list (any domain) and mail without such a user (trusted networks, our own DSNs) are not limited.
 */
export function checkAuthors(domains: readonly string[] | null, authors: Authors): void {
  if (!domains || domains.length === 0) return;
  for (const [field, list] of [["From", authors.from], ["Sender", authors.sender]] as const) {
    for (const address of list) {
      const p = parseAddress(address);
      if (p.ok && domainAllowed(domains, p.domain)) continue;
      const shown = address === "" ? "has no address" : `<${address}> is not in this user's sender domains`;
      throw new IntakeError(553, "5.7.1", `${field}: header ${shown}`, 403, "from");
    }
  }
}

/** The domains an accepted submission sends as: the envelope sender's and the From/Sender addresses'. */
export function sendingDomains(envelopeFrom: string, authors: Authors): string[] {
  const domains = [envelopeFrom, ...authors.from, ...authors.sender].flatMap((a) => {
    const p = parseAddress(a);
    return p.ok ? [p.domain] : [];
  });
  return [...new Set(domains)];
}

export function checkRecipientCount(n: number, limits: PolicyLimits): void {
  if (n === 0) throw new IntakeError(554, "5.5.1", "no valid recipients", 400, "recipient");
  if (n > limits.maxRecipients) {
    throw new IntakeError(452, "4.5.3", `too many recipients (at most ${limits.maxRecipients})`, 400, "recipient");
  }
}

/**
 * A recipient at an address literal (`user@[10.0.0.1]`) would have delivery connect to that IP, an internal host as
 * readily as any: a tenant could make outpost reach what only it can reach. Refused unless allowed (RFC 3463 X.1.2,
 * "bad destination system address"). SMTP asks at RCPT, intake for every submission (the API, DSNs we make).
 */
export function checkRecipientDomain(address: string, limits: PolicyLimits): void {
  if (!limits.allowAddressLiterals && isAddressLiteral(address)) {
    throw new IntakeError(553, "5.1.2", `<${address}>: address literals are not accepted as recipients here`, 400, "recipient");
  }
}

export function checkSize(size: number, limits: PolicyLimits): void {
  if (size > limits.maxMessageSize) {
    throw new IntakeError(552, "5.3.4", `message exceeds fixed maximum message size (${limits.maxMessageSize} bytes)`, 413, "body");
  }
}

/**
 * Every relay adds a `Received` field (RFC 5321 §4.4), so a message that has passed more relays than any real
 * path has is going round in a loop (RFC 5321 §6.3): refused, like Postfix's hopcount_limit. `received` counts
 * the fields of the message as it would be stored, our own trace line included.
 */
export function checkHops(received: number, limits: PolicyLimits): void {
  if (received > limits.maxHops) {
    throw new IntakeError(554, "5.4.6", `Too many hops (${received} Received header fields, at most ${limits.maxHops})`, 400, "body");
  }
}

/** What the instance has that some options need: "" when it has none. */
export interface OptionSupport {
  /** tracking.bounce_domain: VERP return paths */
  bounceDomain: string;
  /** http.public_url: click and open links, the one-click unsubscribe URL */
  publicUrl: string;
}

/** Options whose links point at http.public_url, each under its API field name (the SMTP header is said too). */
const NEEDS_PUBLIC_URL: [keyof MessageOptions, string, string][] = [
  ["trackClicks", "clicktracking", "X-Outpost-Track-Clicks"],
  ["trackOpens", "openstracking", "X-Outpost-Track-Opens"],
  ["unsubscribe", "unsubscribe", "X-Outpost-Unsubscribe"],
];

/**
 * An option the instance cannot honour is refused, not ignored (RFC 3463 5.3.3, "system not capable of selected
 * features"): bounce tracking needs a bounce domain for its VERP return path; click and open tracking and
 * one-click unsubscribe need a public URL for their links. The API names the field, SMTP the field and header.
 */
export function checkOptions(options: MessageOptions, support: OptionSupport): void {
  if (options.trackBounces && support.bounceDomain === "") {
    throw new IntakeError(554, "5.3.3", "bouncetracking needs tracking.bounce_domain, which this instance does not have", 400, "bouncetracking");
  }
  if (support.publicUrl !== "") return;
  for (const [option, field, header] of NEEDS_PUBLIC_URL) {
    if (options[option]) {
      throw new IntakeError(554, "5.3.3", `${field} (${header}) needs http.public_url, which this instance does not have`, 400, field);
    }
  }
}
