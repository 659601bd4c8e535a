/**
 * @module bounce/group-commit — reports that arrive together share one commit, each in its own savepoint: one
 * report's failure rolls back only its own changes. A promise resolves only once the commit that holds its work
 * is on disk; that fsync runs off the thread SMTP runs on, shared with other commits waiting (db/durable.ts).
 */
import type { Database } from "bun:sqlite";
import { commitDurably, whenSyncIdle } from "../db/client.ts";

interface Pending {
  work: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export class GroupCommit {
  private pending: Pending[] = [];
  private scheduled = false;

  constructor(private sqlite: Database) {}

  /** Runs `work` (synchronous SQL) in the next shared transaction; resolves with its result after the commit. */
  run<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ work, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => whenSyncIdle(this.sqlite, () => this.commit()));
      }
    });
  }

  private commit(): void {
    this.scheduled = false;
    const items = this.pending.splice(0);
    const results: Array<{ value: unknown } | { error: unknown }> = [];
    let durable: Promise<void>;
    try {
      durable = commitDurably(this.sqlite, () =>
        this.sqlite.transaction(() => {
          for (const it of items) {
            try {
              results.push({ value: this.sqlite.transaction(it.work)() });
            } catch (error) {
              results.push({ error });
            }
          }
        }).immediate(),
      ).durable;
    } catch (e) {
      // nothing of this batch was committed: no report may be answered as if it had been
      for (const it of items) it.reject(e);
      return;
    }
    durable.then(
      () =>
        items.forEach((it, i) => {
          const r = results[i]!;
          if ("error" in r) it.reject(r.error);
          else it.resolve(r.value);
        }),
      // committed, but not shown to be on disk: the sender is told to try again
      (e: unknown) => {
        for (const it of items) it.reject(e);
      },
    );
  }
}
