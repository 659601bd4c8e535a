/**
 * @module bounce/rules — the one rule table that says what a failure reply means: hard, soft, throttle or not a
 * bounce (pure data, in the spirit of ZoneMTA's config/bounces.txt).
 *
 * Two readers share it. The scheduler (delivery/classify.ts) asks about live SMTP replies: its 4xx rows decide
 * which temporary replies are a throttle. Suppression (delivery/outcome.ts for our own replies, bounce ingest
 * for returned DSNs via bounce/parse.ts) asks whether the address itself is bad: only "hard" suppresses.
 *
 * Rows are tried in order and the first match wins, so the narrow exceptions come before the broad rules:
 * - a 4xx is never hard, whatever its text: the receiver itself says it may work later;
 * - a refusal of the *sender* ("sender rejected", 5.1.0 from Cox) never condemns the recipient;
 * - a full mailbox is soft even when given as 5.1.1 or 5xx: the address exists;
 * - a blocklisted IP or spam verdict is about us or the content, not the address, even when the text also says
 *   "recipient address rejected";
 * - a policy refusal (5.7.x) is soft unless its text says the user does not exist.
 * A failure that matches no row is soft (a bug or an unknown text must never suppress an address).
 */

export type BounceClass = "hard" | "soft" | "throttle" | "not_bounce";

/** How final a reply is: from its basic code, else its enhanced status; "unknown" when it has neither. */
export type Severity = "success" | "transient" | "permanent" | "unknown";

export interface BounceRule {
  /** plain-English name, also used in tests and logs */
  name: string;
  /** applies only to these basic reply codes (exact) */
  codes?: readonly number[];
  /** applies only to failures of these severities; to all when omitted */
  on?: readonly Severity[];
  /** matches the RFC 3463 enhanced status code */
  enhanced?: RegExp;
  /** matches the reply or diagnostic text */
  text?: RegExp;
  verdict: BounceClass;
}

/** What a rule looks at: a live reply (code, enhanced code, text) or one recipient of a DSN. */
export interface FailureReply {
  /** basic SMTP code; 0 or undefined when there was none */
  code?: number;
  /** RFC 3463 code such as "5.1.1"; "" or undefined when there was none */
  status?: string;
  text: string;
}

const TRANSIENT: readonly Severity[] = ["transient"];
/** a hard verdict needs a failure that is not temporary: permanent, or one that gives no code at all (Domino) */
const FINAL: readonly Severity[] = ["permanent", "unknown"];

/** "the user does not exist", in the words servers use */
const NO_SUCH_USER =
  /user(name)? unknown|unknown (user|recipient|mailbox|local.?part|e-?mail address)|no such (user|mailbox|recipient|account|address|person)|user (not found|does ?n[o']t exist)|recipient (not found|unknown|does ?n[o']t exist)|mailbox (not found|does ?n[o']t exist)|account (does ?n[o']t exist|not found)|does ?n[o']t exist|not a (registered|valid|known) (gateway )?(user|recipient|mailbox)|recip(ient)?notfound|recipient name is not recognized|not listed in (the )?(domino )?directory|no mailbox here by that name|this user doesn'?t have an? .{0,30}account/i;

export const BOUNCE_RULES: readonly BounceRule[] = [
  { name: "a success reply", on: ["success"], verdict: "not_bounce" },

  // The scheduler's view of temporary replies. Greylisting, one full mailbox, one recipient receiving too fast
  // and a recipient limit per transaction come before the broad "try again later" throttles: they are not about
  // the destination's appetite, and slowing everyone down would not help.
  { name: "421 closes the channel", codes: [421], verdict: "throttle" },
  { name: "greylisting", on: TRANSIENT, text: /grey ?list|gray ?list|greylisted|graylisted/i, verdict: "soft" },
  { name: "too many recipients in one transaction", on: TRANSIENT, enhanced: /^4\.5\.3$/, verdict: "soft" },
  { name: "too many recipients in one transaction", on: TRANSIENT, text: /too many recipients/i, verdict: "soft" },
  { name: "one mailbox over quota", on: TRANSIENT, enhanced: /^4\.2\.2$/, verdict: "soft" },
  { name: "one mailbox receiving too fast", on: TRANSIENT, enhanced: /^4\.2\.1$/, verdict: "soft" },
  {
    name: "policy rate limit",
    on: TRANSIENT,
    enhanced: /^4\.7\.\d+$/,
    text: /too many|rate|try (again )?later|slow down|throttl|limit|busy|unusual|volume|deferred due to/i,
    verdict: "throttle",
  },
  { name: "server busy or out of resources", on: TRANSIENT, enhanced: /^4\.3\.[12]$/, verdict: "throttle" },
  {
    name: "connection or rate limit in the text",
    on: TRANSIENT,
    // not "try again later" on its own: outside 4.7.x, servers say it about any local trouble of theirs
    text: /too many (connections|concurrent|sessions|messages)|rate limit|ratelimit|rate-limit|throttl|slow down|exceeded .{0,40}(rate|limit)|server busy/i,
    verdict: "throttle",
  },

  // Failures that do not prove the address bad, checked before the hard rows.
  {
    name: "the sender is refused, not the recipient",
    text: /sender (address |domain )?(is )?(rejected|refused|denied|blocked|invalid|unknown|not (allowed|permitted|authori[sz]ed))|bad sender|invalid sender|unknown sender|sender verif\w* failed|sender domain (must exist|does ?n[o']t exist|not found)|return.path .{0,40}(invalid|rejected)|<> not allowed/i,
    verdict: "soft",
  },
  { name: "mailbox full", enhanced: /^[45]\.2\.2$/, verdict: "soft" },
  {
    name: "mailbox full",
    text: /mailbox (is )?full|over ?quota|quota (exceeded|full)|exceed(ed|s)? .{0,30}quota|insufficient (disk |storage )?space|mailbox size limit|storage (limit|full)|out of storage/i,
    verdict: "soft",
  },
  {
    name: "blocklisted IP or spam, not the address",
    text: /\bspam|blocked using|block ?list|black ?list|deny ?list|spamhaus|\b(dns)?rbl\b|listed (at|by) |reputation|\bvirus|malware|dmarc/i,
    verdict: "soft",
  },

  // The address itself is bad.
  { name: "no such mailbox, domain or address (5.1.1, 5.1.2, 5.1.3)", on: FINAL, enhanced: /^5\.1\.[123]$/, verdict: "hard" },
  { name: "mailbox moved, no forwarding address (5.1.6)", on: FINAL, enhanced: /^5\.1\.6$/, verdict: "hard" },
  { name: "domain accepts no mail: null MX (5.1.10)", on: FINAL, enhanced: /^5\.1\.10$/, verdict: "hard" },
  { name: "domain has no mail server: unable to route (5.4.4)", on: FINAL, enhanced: /^5\.4\.4$/, verdict: "hard" },
  { name: "policy refusal that says the user does not exist", on: FINAL, enhanced: /^5\.7\.\d+$/, text: NO_SUCH_USER, verdict: "hard" },
  { name: "policy refusal (5.7.x)", enhanced: /^5\.7\.\d+$/, verdict: "soft" },
  { name: "the user does not exist", on: FINAL, text: NO_SUCH_USER, verdict: "hard" },
  {
    name: "the address is rejected, invalid or gone",
    on: FINAL,
    text: /address rejected|invalid (recipient|mailbox|address|user|e-?mail address)|mailbox (is )?(unavailable|not available|disabled permanently)|no longer (on (this )?server|active|in use|valid|available)|inactive (e-?mail )?(address|account|user|mailbox)|account (has been )?(deleted|closed|terminated|removed)|address (is )?(unknown|invalid|not valid)/i,
    verdict: "hard",
  },
  {
    name: "the domain has no mail server",
    on: FINAL,
    text: /host (or domain name )?(unknown|not found)|unknown host|domain (not found|does ?n[o']t exist)|no such domain|couldn't find a mail exchanger|no mail exchanger|no mx (record|host)|unrouteable address/i,
    verdict: "hard",
  },

  // Soft failures named for the reader; anything unmatched is soft as well.
  { name: "mailbox disabled (5.2.1)", enhanced: /^5\.2\.1$/, verdict: "soft" },
  {
    name: "expired in the queue",
    enhanced: /^[45]\.4\.7$/,
    verdict: "soft",
  },
  {
    name: "expired in the queue",
    text: /retry timeout exceeded|expired|too long in the queue|in the queue too long|giving up|gave up/i,
    verdict: "soft",
  },
];

const ENHANCED_RE = /^[245]\.\d{1,3}\.\d{1,3}$/;

/** The reply's severity: its basic code's class (2, 4, 5), else its enhanced code's, else "unknown". */
export function severityOf(reply: FailureReply): Severity {
  const byCode = Math.floor((reply.code ?? 0) / 100);
  const status = reply.status?.trim() ?? "";
  const cls = [2, 4, 5].includes(byCode) ? byCode : ENHANCED_RE.test(status) ? Number(status[0]) : 0;
  return cls === 2 ? "success" : cls === 4 ? "transient" : cls === 5 ? "permanent" : "unknown";
}

/** The first rule that matches; null when none does. */
export function matchBounceRule(reply: FailureReply): BounceRule | null {
  const severity = severityOf(reply);
  const status = reply.status?.trim() ?? "";
  // the texts are single replies or diagnostics: a cap keeps hostile input cheap for every row
  const text = reply.text.length > 4000 ? reply.text.slice(0, 4000) : reply.text;
  for (const rule of BOUNCE_RULES) {
    if (rule.codes && !rule.codes.includes(reply.code ?? 0)) continue;
    if (rule.on && !rule.on.includes(severity)) continue;
    if (rule.enhanced && !rule.enhanced.test(status)) continue;
    if (rule.text && !rule.text.test(text)) continue;
    return rule;
  }
  return null;
}

/** The verdict for one failure: the matching rule's, else "soft" (an unknown reason never suppresses). */
export function classifyFailure(reply: FailureReply): BounceClass {
  return matchBounceRule(reply)?.verdict ?? "soft";
}
