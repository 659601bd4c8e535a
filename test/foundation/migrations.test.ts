/** Migrations: every journal entry is embedded, and an empty database reaches the current schema. */
import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { applyMigrations } from "../../src/db/client.ts";
import { embeddedMigrations, JOURNAL_TAGS } from "../../src/db/migrations.ts";

test("every SQL file drizzle-kit generated is in the journal and embedded", () => {
  const files = readdirSync(join(import.meta.dir, "../../migrations")).filter((f) => f.endsWith(".sql"));
  expect(files.map((f) => f.replace(/\.sql$/, "")).sort()).toEqual([...JOURNAL_TAGS].sort());
  expect(embeddedMigrations().map((m) => m.tag)).toEqual(JOURNAL_TAGS);
});

test("an empty database gets every table, and applying again changes nothing", () => {
  const db = new Database(":memory:");
  expect(applyMigrations(db, embeddedMigrations())).toEqual(JOURNAL_TAGS);
  const tables = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name);
  for (const t of ["users", "api_keys", "messages", "recipients", "events", "suppressions", "webhook_outbox"]) expect(tables).toContain(t);
  expect(applyMigrations(db, embeddedMigrations())).toEqual([]);
});
