/**
 * @module auth/verified-domains — the verdict of each sender domain's last check, for `spf.require_verified_domains`.
 * A check that passes verifies the domain; one that fails takes that back; one that only met DNS failures
 * (temperror) changes nothing, so a DNS hiccup never stops a verified domain's mail.
 */
import { eq } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { domainVerdicts } from "./schema.ts";

export type CheckOutcome = "pass" | "fail" | "temperror";

export interface DomainVerdict {
  domain: string;
  verified: boolean;
  lastResult: CheckOutcome;
  /** ms */
  checkedAt: number;
  passedAt: number | null;
  /** the first problem of the last failing check */
  summary: string;
}

const OUTCOMES: readonly CheckOutcome[] = ["pass", "fail", "temperror"];

function toVerdict(row: typeof domainVerdicts.$inferSelect): DomainVerdict {
  const lastResult = OUTCOMES.find((o) => o === row.lastResult) ?? "temperror";
  return { domain: row.domain, verified: row.verified, lastResult, checkedAt: row.checkedAt, passedAt: row.passedAt, summary: row.summary };
}

export function verdictOf(db: Db, domain: string): DomainVerdict | null {
  const row = db.select().from(domainVerdicts).where(eq(domainVerdicts.domain, domain)).get();
  return row ? toVerdict(row) : null;
}

/** Records one check's outcome and returns the verdict that follows from it. */
export function recordCheck(db: Db, domain: string, outcome: CheckOutcome, summary: string, now: number): DomainVerdict {
  const before = verdictOf(db, domain);
  const verified = outcome === "temperror" ? (before?.verified ?? false) : outcome === "pass";
  const passedAt = outcome === "pass" ? now : (before?.passedAt ?? null);
  const row = { domain, lastResult: outcome, checkedAt: now, passedAt, verified, summary: outcome === "pass" ? "" : summary };
  db.insert(domainVerdicts).values(row).onConflictDoUpdate({ target: domainVerdicts.domain, set: row }).run();
  return { ...row };
}
