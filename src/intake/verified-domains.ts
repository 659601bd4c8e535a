/**
 * @module intake/verified-domains — `spf.require_verified_domains`: a user's mail is accepted only from domains
 * whose domain check (spf/check.ts) has passed. How a domain becomes verified (docs/spf.md):
 * - any check records its verdict: `outpost spf check D`, `GET /v1/domains/D/check`, or the check intake runs
 *   itself the first time a domain is used;
 * - a verified domain stays verified for `recheckAfterMs` (1 h); after that its next message is accepted at once
 *   and the check runs again in the background, so mail never waits on it; a check that fails takes the
 *   verification back, one that meets only DNS failures does not;
 * - a domain never verified, or no longer, is checked again when used, at most every `retryAfterMs` (5 min); in
 *   between, or when that check fails too, mail from it is refused: `553 5.7.1` / 403, saying to run the check.
 */
import { recordCheck, verdictOf, type CheckOutcome, type DomainVerdict } from "../auth/verified-domains.ts";
import type { Db } from "../db/client.ts";
import { IntakeError } from "./policy.ts";

/** Runs a domain's check: its outcome and, when it did not pass, the first problem in words. */
export type DomainChecker = (domain: string) => Promise<{ outcome: CheckOutcome; summary: string }>;

export interface VerifiedDomainsOptions {
  recheckAfterMs?: number;
  retryAfterMs?: number;
  now?: () => number;
}

export class VerifiedDomains {
  private running = new Map<string, Promise<DomainVerdict>>();
  private readonly recheckAfterMs: number;
  private readonly retryAfterMs: number;
  private readonly now: () => number;

  constructor(
    private db: Db,
    private check: DomainChecker,
    opts: VerifiedDomainsOptions = {},
  ) {
    this.recheckAfterMs = opts.recheckAfterMs ?? 60 * 60_000;
    this.retryAfterMs = opts.retryAfterMs ?? 5 * 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Resolves when mail may be sent as `domain`; otherwise throws the IntakeError to answer with. */
  async require(domain: string): Promise<void> {
    let verdict = verdictOf(this.db, domain);
    const age = verdict ? this.now() - verdict.checkedAt : Infinity;
    if (verdict?.verified) {
      if (age >= this.recheckAfterMs) void this.run(domain);
      return;
    }
    if (age >= this.retryAfterMs) verdict = await this.run(domain);
    if (verdict?.verified) return;
    throw refusal(domain, verdict);
  }

  /** One check per domain at a time; whatever it finds is recorded. */
  private run(domain: string): Promise<DomainVerdict> {
    const inFlight = this.running.get(domain);
    if (inFlight) return inFlight;
    const done = this.check(domain)
      // a check that breaks counts as one that could not reach DNS: it neither verifies nor takes back
      .catch((e: unknown) => ({ outcome: "temperror" as const, summary: e instanceof Error ? e.message : String(e) }))
      .then(({ outcome, summary }) => recordCheck(this.db, domain, outcome, summary, this.now()))
      .finally(() => this.running.delete(domain));
    this.running.set(domain, done);
    return done;
  }
}

function refusal(domain: string, verdict: DomainVerdict | null): IntakeError {
  const how = `run \`outpost spf check ${domain}\` or GET /v1/domains/${domain}/check`;
  if (verdict?.lastResult === "temperror" && verdict.passedAt === null) {
    return new IntakeError(451, "4.7.0", `sender domain ${domain} could not be checked yet (DNS did not answer); try again later`, 503, "from");
  }
  const why = verdict?.summary ? `: ${verdict.summary}` : "";
  return new IntakeError(553, "5.7.1", `sender domain ${domain} is not verified, its domain check did not pass${why}; fix it and ${how}`, 403, "from");
}
