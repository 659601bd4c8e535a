/** @module db/client — opens the SQLite store durably (WAL, synchronous=FULL) and applies migrations. */
import { Database } from "bun:sqlite";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { embeddedMigrations, type Migration } from "./migrations.ts";

export type Db = BunSQLiteDatabase<Record<string, never>> & { $client: Database };

export interface Store {
  /** the raw connection, for hand-tuned statements and transactions */
  sqlite: Database;
  db: Db;
  close(): void;
}

/** Creates the directory 0700 if missing (SPEC: data dir is private). */
export function ensurePrivateDir(dir: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/** Opens (creating if needed) the database file with mode 0600 and applies pending migrations. */
export function openStore(path: string): Store {
  ensurePrivateDir(dirname(path));
  const sqlite = new Database(path, { create: true, strict: true });
  chmodSync(path, 0o600);
  // WAL + FULL: a commit returns only after the WAL is fsync'd, which is what our 250/202 promise rests on.
  sqlite.exec("PRAGMA journal_mode = WAL");
  sqlite.exec("PRAGMA synchronous = FULL");
  sqlite.exec("PRAGMA busy_timeout = 5000");
  sqlite.exec("PRAGMA foreign_keys = ON");
  applyMigrations(sqlite, embeddedMigrations());
  const db = drizzle({ client: sqlite }) as Db;
  return { sqlite, db, close: () => sqlite.close() };
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
