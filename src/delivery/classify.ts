/**
 * @module delivery/classify — what an SMTP reply means for scheduling: ok, temporary, permanent or throttle.
 *
 * The basic code decides the outcome, as docs/delivery.md says: 2xx ok, 4xx (or no reply) temporary, 5xx permanent.
 * Among temporary replies, the one rule table (bounce/rules.ts, shared with hard-bounce suppression and DSN
 * parsing) picks out the ones that say "this server wants less from you", which the scheduler answers by cutting
 * the destination's concurrency and rate (AIMD).
 *
 * Decisions worth knowing (the table's 4xx rows, first match wins):
 * - 421 is always a throttle: the server is closing the channel on us, whatever the text says.
 * - 452 4.5.3 "too many recipients" is NOT a throttle: it limits one transaction, not the server's appetite;
 *   the recipients it refused are deferred and go out in a later transaction. Lowering the destination's
 *   connection count would not help.
 * - 450 4.2.1 "receiving mail too fast" (Gmail) concerns one mailbox, so it is temporary, not a throttle:
 *   slowing the whole destination for one busy recipient would delay everyone else's mail.
 * - Greylisting ("greylisted, try again later") is temporary, not a throttle.
 * - 5xx replies are permanent even when their text mentions rates (docs/delivery.md: 5xx → bounced).
 */
import { matchBounceRule, type BounceRule } from "../bounce/rules.ts";

export type ReplyClass = "ok" | "temporary" | "permanent" | "throttle";

/** Classifies one reply. `code` 0 means no reply was had (network error, timeout): temporary. */
export function classifyReply(code: number, enhanced: string, text: string): ReplyClass {
  if (code >= 200 && code < 300) return "ok";
  if (code >= 500 && code < 600) return "permanent";
  if (code === 0) return "temporary";
  return matchRule(code, enhancedFor(code, enhanced), text)?.verdict === "throttle" ? "throttle" : "temporary";
}

/** The table's rule that decided a temporary reply, for logs and tests; null when none matched. */
export function matchRule(code: number, enhanced: string, text: string): BounceRule | null {
  return matchBounceRule({ code, status: enhanced, text });
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
