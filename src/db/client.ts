/** @module db/client — opens the SQLite store durably (WAL, synchronous=FULL, db/durable.ts) and applies migrations. */
import { Database } from "bun:sqlite";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { CheckpointThread } from "./checkpoint.ts";
import { registerWalSync, WalSync, type SyncFile } from "./durable.ts";
import { embeddedMigrations, type Migration } from "./migrations.ts";

export { commitDurably, fdatasyncOffThread, SyncGroup, whenSyncIdle, withLazyCommit, type SyncFile } from "./durable.ts";

const closeHooks = new WeakMap<Database, Array<() => void>>();

/** Runs `fn` when the store of `sqlite` is closed (Store.close), before the connection: for files kept beside it. */
export function onStoreClose(sqlite: Database, fn: () => void): void {
  const hooks = closeHooks.get(sqlite) ?? [];
  hooks.push(fn);
  closeHooks.set(sqlite, hooks);
}

export type Db = BunSQLiteDatabase<Record<string, never>> & { $client: Database };

export interface Store {
  /** the raw connection, for hand-tuned statements and transactions */
  sqlite: Database;
  db: Db;
  close(): void;
}

/**
 * Creates DIR (and missing parents) 0700 when it is missing. An existing directory keeps its mode: the database
 * may live in a directory other services share, and a chmod there would lock them out. Returns whether it was
 * created and its permission bits, so `serve` can warn about a directory others can read.
 */
export function ensurePrivateDir(dir: string): { created: boolean; mode: number } {
  const created = !existsSync(dir);
  if (created) mkdirSync(dir, { recursive: true, mode: 0o700 });
  return { created, mode: statSync(dir).mode & 0o777 };
}

/** The database cannot be used as it is: exit 1 with this message, which says what to do. */
export class StoreOpenError extends Error {}

export interface OpenOptions {
  /**
   * Run SQLite's quick_check first and refuse a damaged database (`serve` does; CLI commands skip the cost), on
   * every table but those named in `skip`: tables whose size grows with the mail (message bodies), which would
   * make the check, and so the start, as slow as reading the whole file.
   */
  verify?: { skip: string[] };
  /**
   * A file whose presence says the data dir was used before (the instance secret): a missing or empty database
   * is then a lost one (its users, keys and queue with it), refused rather than silently made anew.
   */
  usedBefore?: string;
  /** how durable commits sync the WAL file (db/durable.ts; tests give one that never finishes, or fails) */
  syncWal?: SyncFile;
  /**
   * Checkpoint the WAL on a thread of its own (db/checkpoint.ts), not inside commits on this one: `serve`. The
   * thread's failures are told here (the connection then checkpoints itself, as SQLite does by default).
   */
  checkpointThread?: { onFailure: (why: string) => void };
}

/** Opens (creating if needed, mode 0600) the database file and applies pending migrations. */
export function openStore(path: string, opts: OpenOptions = {}): Store {
  const usedBefore = opts.usedBefore !== undefined && existsSync(opts.usedBefore) ? opts.usedBefore : null;
  if (path !== ":memory:") prepareFile(path, usedBefore);
  let sqlite: Database | undefined;
  let wal = false;
  try {
    sqlite = new Database(path, { create: true, strict: true });
    // WAL + FULL: a commit returns only after the WAL is fsync'd, which is what our 250/202 promise rests on;
    // the commits that answer clients in a group get the same from db/durable.ts, with the fsync off this thread
    wal = sqlite.query<{ journal_mode: string }, []>("PRAGMA journal_mode = WAL").get()?.journal_mode === "wal";
    sqlite.exec("PRAGMA synchronous = FULL");
    sqlite.exec("PRAGMA busy_timeout = 5000");
    sqlite.exec("PRAGMA foreign_keys = ON");
    // 8 MiB of page cache (SQLite's default is 2 MiB): a group commit of fifty 50 KiB messages dirties ~650 pages;
    // past the cache SQLite spills pages to the WAL mid-transaction, writes them again at COMMIT and re-reads every
    // frame after the first spilled one to rewrite its checksum (pread + pwrite per frame). The cache fills as
    // pages are used, up to this size: a queue of a million rows costs at most 6 MiB more (docs/config.md)
    sqlite.exec("PRAGMA cache_size = -8192");
    // statement journals and sorts in memory, not in temporary files (one write per page, per statement)
    sqlite.exec("PRAGMA temp_store = MEMORY");
    if (opts.verify) verify(sqlite, path, opts.verify.skip, usedBefore);
    if (usedBefore && !hasSchema(sqlite)) throw new StoreOpenError(lostDatabase(path, usedBefore));
    applyMigrations(sqlite, embeddedMigrations());
  } catch (e) {
    sqlite?.close();
    if (e instanceof StoreOpenError) throw e;
    const code = (e as { code?: unknown } | null)?.code;
    if (code === "SQLITE_CORRUPT" || code === "SQLITE_NOTADB") throw new StoreOpenError(corrupt(path, String((e as Error).message), usedBefore));
    throw new StoreOpenError(`cannot open the database ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const db = drizzle({ client: sqlite }) as Db;
  // without WAL (`:memory:`, a file system without shared memory) every commit stays FULL, durable on return
  const walSync = wal ? new WalSync(`${path}-wal`, opts.syncWal) : null;
  if (walSync) registerWalSync(sqlite, walSync);
  const checkpoints = wal && opts.checkpointThread ? new CheckpointThread(sqlite, path, opts.checkpointThread.onFailure) : null;
  return {
    sqlite,
    db,
    close: () => {
      for (const fn of closeHooks.get(sqlite) ?? []) fn();
      checkpoints?.close();
      walSync?.close();
      sqlite.close();
    },
  };
}

/** The checks that need no SQLite: a lost database, permissions; then creates a missing file 0600. */
function prepareFile(path: string, usedBefore: string | null): void {
  const dir = dirname(path);
  ensurePrivateDir(dir);
  const exists = existsSync(path);
  if (usedBefore && (!exists || statSync(path).size === 0)) {
    throw new StoreOpenError(lostDatabase(path, usedBefore));
  }
  // SQLite creates DB-wal and DB-shm beside the database, and serve its lock file
  if (!accessible(dir, constants.W_OK | constants.X_OK)) throw new StoreOpenError(permissionDenied(dir, "directory"));
  if (exists && !accessible(path, constants.R_OK | constants.W_OK)) throw new StoreOpenError(permissionDenied(path, "file"));
  // only what outpost creates gets its mode set: an existing file keeps the one its owner chose
  if (!exists) closeSync(openSync(path, "wx", 0o600));
}

function accessible(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

function permissionDenied(path: string, kind: "file" | "directory"): string {
  const st = statSync(path);
  const need = kind === "file" ? "read and write it" : "create the database's -wal, -shm and .lock files in it";
  return `permission denied: ${path} is owned by uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")}, ` +
    `we run as uid ${process.getuid?.() ?? "?"} and need to ${need}`;
}

/**
 * SQLite's quick_check, table by table: each table's and index's pages, without matching indexes to their tables
 * (integrity_check's slow part). Its cost is the pages it reads: the queue's rows, not the message bodies (`skip`),
 * a damaged page of which fails that one message's delivery later, with SQLITE_CORRUPT in the log.
 */
function verify(sqlite: Database, path: string, skip: string[], usedBefore: string | null): void {
  const tables = sqlite.query<{ name: string }, []>("SELECT name FROM sqlite_schema WHERE type = 'table'").all();
  for (const { name } of tables) {
    if (skip.includes(name)) continue;
    const first = sqlite.query<{ quick_check: string }, []>(`PRAGMA quick_check("${name.replaceAll('"', '""')}")`).get()?.quick_check;
    if (first !== "ok") throw new StoreOpenError(corrupt(path, first ?? "no answer", usedBefore));
  }
}

function corrupt(path: string, finding: string, usedBefore: string | null): string {
  const afresh = usedBefore ? `move it away and remove ${usedBefore}` : "move it away";
  return `the database ${path} is damaged (${finding.replace(/\s*\n\s*/g, " ")}). Restore it from a backup (replace the ` +
    `file and remove ${basename(path)}-wal and ${basename(path)}-shm beside it), or, to start afresh, ${afresh}`;
}

function hasSchema(sqlite: Database): boolean {
  return sqlite.query("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_migrations'").get() !== null;
}

function lostDatabase(path: string, marker: string): string {
  return `the database ${path} is missing or empty, but ${marker} shows this data dir was used before: starting ` +
    `would make a new admin and API key and lose the users, keys and queue. Restore the database from a backup, ` +
    `or remove ${marker} to start afresh`;
}

/** Applies each migration not yet recorded, each in its own transaction. Returns the tags applied. */
export function applyMigrations(sqlite: Database, migrations: Migration[]): string[] {
  sqlite.exec("CREATE TABLE IF NOT EXISTS _migrations (tag TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)");
  const done = new Set(sqlite.query<{ tag: string }, []>("SELECT tag FROM _migrations").all().map((r) => r.tag));
  const applied: string[] = [];
  for (const m of migrations) {
    if (done.has(m.tag)) continue;
    sqlite.transaction(() => {
      for (const stmt of m.sql.split("--> statement-breakpoint")) {
        if (stmt.trim()) sqlite.exec(stmt);
      }
      sqlite.query("INSERT INTO _migrations (tag, applied_at) VALUES (?, ?)").run(m.tag, Date.now());
    })();
    applied.push(m.tag);
  }
  return applied;
}
