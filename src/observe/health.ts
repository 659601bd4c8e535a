/**
 * @module observe/health — is the store failing? The work that uses it (storing new mail, claiming, settling)
 * reports each commit here, and `/healthz` answers from it: a store that fails to write while it still answers
 * reads (disk full, a read-only file) is a failing store, which a read probe alone would call healthy.
 */

/** One kind of work's reports: a commit that went through, or one that did not. */
export interface HealthReporter {
  succeeded(): void;
  failed(error: unknown): void;
}

/** Runs `fn` (a commit) and tells `health` how it went; the error still reaches the caller. */
export function reported<T>(health: HealthReporter | undefined, fn: () => T): T {
  let result: T;
  try {
    result = fn();
  } catch (e) {
    health?.failed(e);
    throw e;
  }
  health?.succeeded();
  return result;
}

export type HealthStatus = { ok: true } | { ok: false; reason: string; since: number };

/** Failures in a row before a kind of work counts as failing: one lock timeout (SQLITE_BUSY) is not an outage. */
export const FAILURES_IN_A_ROW = 3;

/** SQLite codes that say the disk or the file is the problem (full, I/O error, read-only, damaged): failing at once. */
const STORAGE_FAILURE = /^SQLITE_(FULL|IOERR|READONLY|CORRUPT|NOTADB|CANTOPEN)/;
/** The store answered and refused a row (a unique key taken): that is the store working, not failing. */
const STORE_ANSWERED = /^SQLITE_CONSTRAINT/;

interface Streak {
  failures: number;
  since: number;
  last: string;
  failing: boolean;
}

export class StoreHealth {
  private streaks = new Map<string, Streak>();

  constructor(private now: () => number = Date.now) {}

  /** The reporter for one kind of work (`intake`, `claim`, `settle`): only its own success clears its failure. */
  reporter(work: string): HealthReporter {
    return {
      succeeded: () => this.streaks.delete(work),
      failed: (error) => this.failed(work, error),
    };
  }

  /** Failing while any kind of work is; the reason names it, how often it failed, and its last error. */
  status(): HealthStatus {
    for (const [work, s] of this.streaks) {
      if (!s.failing) continue;
      const times = s.failures === 1 ? "failed" : `failed ${s.failures} times in a row`;
      return { ok: false, reason: `the store is failing: ${work} ${times} (last: ${s.last})`, since: s.since };
    }
    return { ok: true };
  }

  private failed(work: string, error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === "string" && STORE_ANSWERED.test(code)) return;
    const s = this.streaks.get(work) ?? { failures: 0, since: this.now(), last: "", failing: false };
    s.failures++;
    s.last = describe(error);
    s.failing ||= s.failures >= FAILURES_IN_A_ROW || (typeof code === "string" && STORAGE_FAILURE.test(code));
    this.streaks.set(work, s);
  }
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? `${code}: ${error.message}` : error.message;
}
