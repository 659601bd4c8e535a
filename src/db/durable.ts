/**
 * @module db/durable — commits that answer a client, made durable without blocking the JavaScript thread: the
 * COMMIT does not wait for the disk (WAL, synchronous=NORMAL), then an fdatasync of the WAL file runs on the thread
 * pool, and the callers are answered only once it returned. Commits that return while a sync runs share the next
 * one. Why this is as durable as synchronous=FULL, case by case with SQLite's documentation: docs/flow.md "Durability".
 */
import type { Database } from "bun:sqlite";
import { closeSync, fdatasync, fstatSync, openSync, statSync } from "node:fs";

/** Makes what was written to the open file `fd` durable (fdatasync(2)); resolves once it is. */
export type SyncFile = (fd: number) => Promise<void>;

/** fdatasync(2) from Bun's thread pool: the JavaScript thread goes on meanwhile. */
export const fdatasyncOffThread: SyncFile = (fd) =>
  new Promise((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));

/**
 * The WAL could not be shown to be on disk: whatever returned from a commit since the last sync that succeeded
 * may be lost to a power cut, so no caller of those commits may be told its data is stored. Its code is the one
 * SQLite gives a commit whose own fsync failed, so `/healthz` counts it as the disk failing (observe/health.ts).
 */
export class WalSyncError extends Error {
  readonly code = "SQLITE_IOERR_FSYNC";
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Syncs shared by their callers, one at a time: `join()` resolves once a sync that started after the call has
 * returned (one already running may have missed what the caller wrote); calls made while one runs share the next.
 * `sync` starts one (what it syncs is its own business) and its rejection is every waiter's answer; `ended` runs
 * after each, before the next starts, and `idle` once none is left to run.
 */
export class SyncGroup {
  private running = false;
  private waiting: Waiter[] = [];

  constructor(
    private sync: () => Promise<unknown>,
    private ended: () => void = () => {},
    private idle: () => void = () => {},
  ) {}

  /** A sync is running. */
  get busy(): boolean {
    return this.running;
  }

  join(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running) this.next();
    });
  }

  private next(): void {
    const batch = this.waiting.splice(0);
    if (batch.length === 0) return this.idle();
    this.running = true;
    let sync: Promise<unknown>;
    try {
      sync = this.sync();
    } catch (e) {
      sync = Promise.reject(e);
    }
    sync.then(
      () => {
        for (const w of batch) w.resolve();
      },
      (e: unknown) => {
        for (const w of batch) w.reject(e);
      },
    ).finally(() => {
      this.running = false;
      this.ended();
      this.next();
    });
  }
}

/**
 * The fdatasync of one connection's WAL file, shared by every commit waiting for it. A caller is only answered by
 * a sync that started after its commit returned (one already running may have missed its frames).
 */
export class WalSync {
  private fd: number | null = null;
  private inode: { dev: number; ino: number } | null = null;
  private closed = false;
  /** once set, every later sync fails: see `fail` */
  private failure: WalSyncError | null = null;
  /** commits put off until the running sync ends (`whenIdle`) */
  private deferred: Array<() => void> = [];
  private syncs: SyncGroup;

  constructor(
    private walPath: string,
    private syncFile: SyncFile = fdatasyncOffThread,
  ) {
    this.syncs = new SyncGroup(
      () => this.syncLiveWal(),
      () => {
        for (const commit of this.deferred.splice(0)) commit();
      },
      // commits made before close() still get their sync; the file is closed once none waits
      () => this.closed && this.closeFd(),
    );
  }

  /** Resolves once every commit that returned before this call is on disk; rejects (WalSyncError) if that fails. */
  synced(): Promise<void> {
    try {
      this.usable();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.syncs.join();
  }

  /** Throws (WalSyncError) when no commit could be shown durable any more: a sync failed, or the store is closed. */
  usable(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new WalSyncError(`the store is closed: ${this.walPath} was not synced`);
  }

  /**
   * Runs `commit` now if no sync is running, else as soon as the running one ends, just before the next starts. A
   * commit made while a sync runs waits for the next sync anyway: put off until then, the submissions arriving
   * meanwhile join one transaction instead of committing (and paying for a transaction) one batch at a time.
   */
  whenIdle(commit: () => void): void {
    if (this.syncs.busy) this.deferred.push(commit);
    else commit();
  }

  /**
   * Refuses new syncs and closes the file once no sync is running or waiting (its descriptor number could otherwise
   * be reused by another file while a sync is handed it). A commit still waiting whose WAL the connection's close
   * has already removed is rejected: the client is told to try again (a duplicate at worst, never a loss).
   */
  close(): void {
    this.closed = true;
    if (!this.syncs.busy) this.closeFd();
  }

  private async syncLiveWal(): Promise<void> {
    if (this.failure) throw this.failure;
    try {
      await this.syncFile(this.liveWal());
    } catch (e) {
      this.fail(e);
      throw this.failure;
    }
  }

  /**
   * The descriptor of the WAL file SQLite writes to. SQLite keeps one WAL file open for the connection's life
   * (it deletes it only when the last connection closes or the journal mode changes, after a checkpoint), and
   * resets or truncates it in place: so the file at the path is SQLite's, unless something outside SQLite
   * removed or replaced it. Then syncing either file proves nothing, and the sync fails.
   */
  private liveWal(): number {
    if (this.fd === null) {
      // opened at the first sync: a commit has then been made, so SQLite has created the file
      this.fd = openSync(this.walPath, "r");
      const st = fstatSync(this.fd);
      this.inode = { dev: st.dev, ino: st.ino };
    }
    let st: { dev: number; ino: number } | undefined;
    try {
      st = statSync(this.walPath);
    } catch {
      st = undefined;
    }
    if (!st || st.dev !== this.inode!.dev || st.ino !== this.inode!.ino) {
      if (this.closed) throw new Error(`the store closed before ${this.walPath} was synced`);
      throw new Error(`${this.walPath} was removed or replaced while the database was open`);
    }
    return this.fd;
  }

  /**
   * After a failed fsync Linux may have dropped the unwritten pages and report the next fsync as successful, and
   * the WAL's checksums chain every frame to the ones before it: a later commit that looked synced could then be
   * unreadable after a crash. So no later sync is trusted either, until `serve` is restarted.
   */
  private fail(e: unknown): void {
    const why = e instanceof Error ? e.message : String(e);
    this.failure ??= new WalSyncError(`syncing the database's WAL failed (${why}); restart outpost once the disk is fixed`, { cause: e });
  }

  private closeFd(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

const walSyncs = new WeakMap<Database, WalSync>();

/** Makes `sqlite`'s durable commits sync through `sync` (db/client.ts openStore, for a database in WAL mode). */
export function registerWalSync(sqlite: Database, sync: WalSync): void {
  walSyncs.set(sqlite, sync);
}

/** Runs `commit` now, or once the WAL sync running ends (WalSync.whenIdle); now on a connection without one. */
export function whenSyncIdle(sqlite: Database, commit: () => void): void {
  const wal = walSyncs.get(sqlite);
  if (wal) wal.whenIdle(commit);
  else commit();
}

/**
 * Runs `commit` (which opens and commits one transaction) without its COMMIT waiting for the disk, and returns its
 * value with `durable`, which resolves once that commit is on disk, or rejects (WalSyncError) if that cannot be
 * shown. Answer the client after `durable`, never before. Once a sync failed it throws without committing. On a connection without a registered WAL sync (`new
 * Database(...)`, `:memory:`, a journal mode other than WAL) the commit is synchronous=FULL, durable on return.
 */
export function commitDurably<T>(sqlite: Database, commit: () => T): { value: T; durable: Promise<void> } {
  const wal = walSyncs.get(sqlite);
  if (!wal) return { value: commit(), durable: Promise.resolve() };
  // refused before committing: rows committed then refused would be delivered and sent again by the client, each time
  wal.usable();
  // inside a transaction the commit would be the outer one's, made later: nothing here could vouch for it
  if (sqlite.inTransaction) throw new Error("commitDurably called inside a transaction");
  const value = withLazyCommit(sqlite, commit);
  return { value, durable: wal.synced() };
}

/**
 * Runs `fn`, whose transaction commits without waiting for the fsync (WAL with synchronous=NORMAL for that commit
 * only), then restores FULL. Alone, for the delivery loop's settles: losing one to a power cut only means its
 * recipients are tried again (a duplicate, never a lost message), and the next sync of the WAL (a FULL commit, a
 * durable commit's sync, a checkpoint) makes it durable too. Every commit that answers a client is FULL or
 * waits for its sync (`commitDurably`).
 */
export function withLazyCommit<T>(sqlite: Database, fn: () => T): T {
  // inside a transaction SQLite refuses to change the level, and the commit is the outer one's anyway
  if (sqlite.inTransaction) return fn();
  sqlite.exec("PRAGMA synchronous = NORMAL");
  try {
    return fn();
  } finally {
    sqlite.exec("PRAGMA synchronous = FULL");
  }
}
