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

test("upgrading keeps each entry of the old instance-wide suppression list in force for every sender", () => {
  const db = new Database(":memory:");
  const all = embeddedMigrations();
  const at = all.findIndex((m) => m.tag === "0004_suppression_owner");
  applyMigrations(db, all.slice(0, at));
  db.exec(`INSERT INTO users (id, name, password_hash, created_at) VALUES (3, 'ann', 'x', 1), (5, 'bob', 'x', 1)`);
  db.exec(`INSERT INTO suppressions (address, reason, created_at) VALUES ('gone@example.org', 'hard_bounce', 10), ('no@example.org', 'manual', 20)`);
  expect(applyMigrations(db, all)).toEqual(all.slice(at).map((m) => m.tag));
  const rows = db.query("SELECT user_id, address, reason, created_at FROM suppressions ORDER BY user_id, address").all();
  expect(rows).toEqual([
    { user_id: 0, address: "gone@example.org", reason: "hard_bounce", created_at: 10 },
    { user_id: 0, address: "no@example.org", reason: "manual", created_at: 20 },
    { user_id: 3, address: "gone@example.org", reason: "hard_bounce", created_at: 10 },
    { user_id: 3, address: "no@example.org", reason: "manual", created_at: 20 },
    { user_id: 5, address: "gone@example.org", reason: "hard_bounce", created_at: 10 },
    { user_id: 5, address: "no@example.org", reason: "manual", created_at: 20 },
  ]);
});
