/**
 * @module delivery/settle-batch — group commit for the scheduler's settles. Every commit is an fsync that blocks
 * the one thread intake shares, so settles that finish within SETTLE_WINDOW_MS (or SETTLE_BATCH_MAX of them) run
 * inside one transaction, each in its own savepoint, and share one commit instead of paying one each.
 * What each settle leaves for after the commit (its log lines) runs only once the commit has succeeded.
 */
import type { Logger } from "../observe/log.ts";
import type { AfterCommit } from "./types.ts";

const SETTLE_WINDOW_MS = 10;
const SETTLE_BATCH_MAX = 200;

export class SettleBatcher {
  private pending: { run: () => AfterCommit; done: (p: Promise<void>) => void }[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** `batch` runs a function in one database transaction; without it every settle commits alone. */
  constructor(
    private batch: ((fn: () => void) => void) | undefined,
    private log: Logger,
  ) {}

  /** Runs `run` in the next group commit, then what it returned; resolves after both, rejects if either failed. */
  run(run: () => AfterCommit): Promise<void> {
    const batch = this.batch;
    if (!batch) return Promise.resolve().then(() => run()());
    return new Promise((resolve) => {
      this.pending.push({ run, done: resolve });
      if (this.pending.length === 1) this.timer = setTimeout(() => this.commit(batch), SETTLE_WINDOW_MS);
      else if (this.pending.length >= SETTLE_BATCH_MAX) this.commit(batch);
    });
  }

  /** Commits what has gathered now, without waiting for the window (shutdown). */
  flush(): void {
    if (this.batch && this.pending.length > 0) this.commit(this.batch);
  }

  private commit(batch: (fn: () => void) => void): void {
    clearTimeout(this.timer);
    const items = this.pending;
    this.pending = [];
    if (items.length === 0) return;
    const results: Array<{ after: AfterCommit } | { error: unknown }> = [];
    try {
      // OutcomeRecorder.settle makes its state change synchronously, in a savepoint of this transaction
      batch(() => {
        for (const it of items) {
          try {
            results.push({ after: it.run() });
          } catch (error) {
            results.push({ error });
          }
        }
      });
    } catch (e) {
      // the commit failed: these recipients stay leased until the lease runs out, then go again; what each
      // settle returned was rolled back with the transaction, so none of them may report success
      this.log.error("delivery_settle_commit_failed", { settles: items.length, error: e });
      for (const it of items) it.done(Promise.reject(new Error("settle not committed")));
      return;
    }
    items.forEach((it, i) => it.done(afterCommit(results[i]!)));
  }
}

function afterCommit(r: { after: AfterCommit } | { error: unknown }): Promise<void> {
  if ("error" in r) return Promise.reject(r.error);
  try {
    r.after();
    return Promise.resolve();
  } catch (e) {
    return Promise.reject(e);
  }
}
