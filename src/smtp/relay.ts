/**
 * @module smtp/relay — may this RCPT relay? (pure)
 *
 * Relaying needs an authenticated session or a client in trusted_networks. The one exception is
 * tracking.bounce_domain, which anyone may mail (that is how bounces come back), and where only
 * `b+{token}` (with a token we signed), `postmaster` and `abuse` exist. `%`, `!`, source routes and quoted local parts are
 * plain characters here: the domain after the last unquoted `@` is the only routing information.
 * Address syntax, lengths and the canonical form are mail/address.ts's.
 */
import { checkAddress, domainOf } from "../mail/address.ts";
import { SmtpError } from "../mail/errors.ts";

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
  /** `address` in canonical form (mail/address.ts) */
  | { ok: true; address: string; kind: RecipientKind }
  | { ok: false; error: SmtpError };

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
  return bounceDomain !== "" && domainOf(address) === bounceDomain.toLowerCase() ? "bounce_domain" : "relay";
}

/** One RCPT TO address alone (as smtp-server hands it over: IDN domains decoded to U-labels). */
function decideAlone(address: string, client: RelayClient, policy: RelayPolicy): RcptVerdict {
  const bounceDomain = policy.bounceDomain.toLowerCase();
  // RFC 5321 §4.1.1.3: the domainless <postmaster> must be accepted; ours lives at the bounce domain
  if (address.toLowerCase() === "postmaster") {
    if (bounceDomain) return { ok: true, address: `postmaster@${bounceDomain}`, kind: "bounce_domain" };
    return refuse(550, "5.1.1", "no such mailbox: write to postmaster@ the domain in question");
  }
  const parts = checkAddress(address, "5.1.3");
  if (parts instanceof SmtpError) return { ok: false, error: parts };
  if (bounceDomain && parts.domain === bounceDomain) {
    const local = parts.local;
    if (BOUNCE_MAILBOXES.has(local.toLowerCase()) || (/^b\+/i.test(local) && policy.isValidBounceToken(local))) {
      return { ok: true, address: parts.canonical, kind: "bounce_domain" };
    }
    return refuse(550, "5.1.1", `<${address}>: no such mailbox`);
  }
  if (client.authenticated || client.trusted) return { ok: true, address: parts.canonical, kind: "relay" };
  return refuse(554, "5.7.1", `<${address}>: relaying denied`);
}

function refuse(code: number, enhanced: string, message: string): RcptVerdict {
  return { ok: false, error: new SmtpError(code, enhanced, message) };
}
