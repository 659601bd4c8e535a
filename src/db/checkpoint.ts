/**
 * @module db/checkpoint — WAL checkpoints on a thread of their own, for `serve`.
 *
 * A checkpoint copies the pages committed to the WAL into the database file and syncs it: at 50 KiB a message,
 * a dozen page reads and writes and, per checkpoint, two fsyncs. Run by SQLite's automatic checkpoint, that
 * happens inside a COMMIT on the JavaScript thread (bun:sqlite is synchronous), so SMTP intake, the API and
 * delivery all wait for it. Here a Worker with its own connection runs `wal_checkpoint(PASSIVE)` every
 * `intervalMs`; a PASSIVE checkpoint never blocks the writer (https://sqlite.org/c3ref/wal_checkpoint_v2.html).
 * Once one has copied everything, the writer's next commit starts the WAL over and syncs its header, on the
 * JavaScript thread: a second between checkpoints makes that at most one fsync a second there (every 0.1 s gave
 * 100 of them for 3000 messages of 50 KiB), for a WAL of at most a second of writes.
 * The main connection keeps an automatic checkpoint at a high mark as a backstop (BACKSTOP_PAGES): it only runs
 * if this thread falls that far behind; if the thread fails, the main connection checkpoints as SQLite does by
 * default again. Durability is unchanged: docs/flow.md "Durability".
 */
import type { Database } from "bun:sqlite";

export type CheckpointRequest = { type: "start"; path: string; intervalMs: number } | { type: "close" };
export type CheckpointReply = { type: "failed"; error: string } | { type: "closed" };

/** SQLite's default automatic checkpoint, in WAL pages (https://sqlite.org/pragma.html#pragma_wal_autocheckpoint) */
const DEFAULT_PAGES = 1000;
/**
 * The main connection checkpoints itself only past this many WAL pages (40 MiB at 4 KiB a page): the thread
 * checkpoints long before, unless it is stuck (the WAL file keeps the size it once reached).
 */
export const BACKSTOP_PAGES = 10_000;

/**
 * The thread's module: beside this file when run from source. In the compiled binary (`make build` names it as an
 * entry point of its own) every module's import.meta.url is the bundle's root, the entry points' folder `src/`.
 */
function workerModule(): URL {
  const here = import.meta.url;
  return new URL(here.endsWith("/db/checkpoint.ts") ? "./checkpoint-worker.ts" : "./db/checkpoint-worker.ts", here);
}

export class CheckpointThread {
  private worker: Worker;
  private failed = false;

  constructor(
    private sqlite: Database,
    path: string,
    /** told once if the thread fails: the main connection checkpoints from then on */
    onFailure: (why: string) => void = () => {},
    intervalMs = 1000,
    entry = workerModule(),
  ) {
    sqlite.exec(`PRAGMA wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    this.worker = new Worker(entry.href);
    // the store's close, not this thread, decides when serve may exit
    this.worker.unref();
    const fallBack = (why: string) => {
      if (this.failed) return;
      this.failed = true;
      this.restoreDefault();
      this.worker.terminate();
      onFailure(why);
    };
    this.worker.onmessage = (e: MessageEvent<CheckpointReply>) => {
      if (e.data.type === "failed") fallBack(e.data.error);
      else this.worker.terminate();
    };
    this.worker.onerror = (e) => fallBack(e.message);
    this.worker.postMessage({ type: "start", path, intervalMs } satisfies CheckpointRequest);
  }

  /**
   * Stops checkpointing and closes the thread's connection; the thread ends once it has. Call before closing the
   * main connection, which then checkpoints the rest itself if it is the last (SQLite does at the last close).
   */
  close(): void {
    if (this.failed) return;
    this.failed = true;
    this.restoreDefault();
    this.worker.postMessage({ type: "close" } satisfies CheckpointRequest);
  }

  private restoreDefault(): void {
    try {
      this.sqlite.exec(`PRAGMA wal_autocheckpoint = ${DEFAULT_PAGES}`);
    } catch {
      // the connection is closed already: nothing left to checkpoint from it
    }
  }
}
