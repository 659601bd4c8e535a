/**
 * @module delivery/classify — what an SMTP reply means for scheduling (pure, table-driven like ZoneMTA's
 * config/bounces.txt).
 *
 * The basic code decides the outcome, as SPEC says: 2xx ok, 4xx (or no reply) temporary, 5xx permanent.
 * Among temporary replies, the table picks out the ones that say "this server wants less from you", which the
 * scheduler answers by cutting the destination's concurrency and rate (AIMD). Rules are tried in order and the
 * first match wins, so the narrower "not a throttle" rules (greylisting, one full mailbox, one recipient
 * receiving too fast) come before the broad "try again later" ones.
 *
 * Decisions worth knowing:
 * - 421 is always a throttle: the server is closing the channel on us, whatever the text says.
 * - 452 4.5.3 "too many recipients" is NOT a throttle: it limits one transaction, not the server's appetite;
 *   the recipients it refused are deferred and go out in a later transaction. Lowering the destination's
 *   connection count would not help.
 * - 450 4.2.1 "receiving mail too fast" (Gmail) concerns one mailbox, so it is temporary, not a throttle:
 *   slowing the whole destination for one busy recipient would delay everyone else's mail.
 * - Greylisting ("greylisted, try again later") is temporary, not a throttle.
 * - 5xx replies are permanent even when their text mentions rates (SPEC: 5xx → bounced).
 */

export type ReplyClass = "ok" | "temporary" | "permanent" | "throttle";

interface Rule {
  /** plain-English name, also used in tests */
  name: string;
  /** applies only to these basic codes (exact), or to any 4xx when omitted */
  codes?: number[];
  /** matches the enhanced code */
  enhanced?: RegExp;
  /** matches the reply text */
  text?: RegExp;
  action: "temporary" | "throttle";
}

/** Temporary-reply rules, first match wins. */
export const TEMPORARY_RULES: readonly Rule[] = [
  { name: "421 closes the channel", codes: [421], action: "throttle" },
  { name: "greylisting", text: /grey ?list|gray ?list|greylisted|graylisted/i, action: "temporary" },
  { name: "too many recipients in one transaction", enhanced: /^4\.5\.3$/, action: "temporary" },
  { name: "too many recipients in one transaction", text: /too many recipients/i, action: "temporary" },
  { name: "one mailbox over quota", enhanced: /^4\.2\.2$/, action: "temporary" },
  { name: "one mailbox receiving too fast", enhanced: /^4\.2\.1$/, action: "temporary" },
  {
    name: "policy rate limit",
    enhanced: /^4\.7\.\d+$/,
    text: /too many|rate|try (again )?later|slow down|throttl|limit|busy|unusual|volume|deferred due to/i,
    action: "throttle",
  },
  {
    name: "server busy or out of resources",
    enhanced: /^4\.3\.[12]$/,
    action: "throttle",
  },
  {
    name: "connection or rate limit in the text",
    // not "try again later" on its own: outside 4.7.x, servers say it about any local trouble of theirs
    text: /too many (connections|concurrent|sessions|messages)|rate limit|ratelimit|rate-limit|throttl|slow down|exceeded .*(rate|limit)|server busy/i,
    action: "throttle",
  },
];

/** Classifies one reply. `code` 0 means no reply was had (network error, timeout): temporary. */
export function classifyReply(code: number, enhanced: string, text: string): ReplyClass {
  if (code >= 200 && code < 300) return "ok";
  if (code >= 500 && code < 600) return "permanent";
  if (code === 0) return "temporary";
  const rule = matchRule(code, enhancedFor(code, enhanced), text);
  return rule ? rule.action : "temporary";
}

/** The rule that decided a temporary reply, for logs and tests; null when none matched. */
export function matchRule(code: number, enhanced: string, text: string): Rule | null {
  for (const rule of TEMPORARY_RULES) {
    if (rule.codes && !rule.codes.includes(code)) continue;
    if (rule.enhanced && !rule.enhanced.test(enhanced)) continue;
    if (rule.text && !rule.text.test(text)) continue;
    return rule;
  }
  return null;
}

const ENHANCED_RE = /^([245])\.\d{1,3}\.\d{1,3}$/;

/**
 * The RFC 3463 code to record: the server's own when it gave a well-formed one whose class agrees with the basic
 * code, else "2.0.0"/"4.0.0"/"5.0.0" from the basic code. No reply at all (code 0) is "4.4.1" (no answer from
 * host); anything else unexpected (1xx, 3xx) is "4.0.0", treated as a transient protocol problem.
 */
export function enhancedFor(code: number, given?: string): string {
  const cls = Math.floor(code / 100);
  const m = given ? ENHANCED_RE.exec(given.trim()) : null;
  if (m && Number(m[1]) === cls) return given!.trim();
  if (cls === 2 || cls === 4 || cls === 5) return `${cls}.0.0`;
  if (code === 0) return "4.4.1";
  return "4.0.0";
}
