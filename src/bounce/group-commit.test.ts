import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { join } from "node:path";
import { openStore } from "../db/client.ts";
import { tempDir, waitFor } from "../../test/helpers/harness.ts";
import { GroupCommit } from "./group-commit.ts";

function db(): Database {
  const d = new Database(":memory:");
  d.run("CREATE TABLE t (v TEXT NOT NULL)");
  return d;
}
const values = (d: Database) => d.query<{ v: string }, []>("SELECT v FROM t ORDER BY v").all().map((r) => r.v);

test("in a batch, work that fails rolls back alone: the rest commits and resolves", async () => {
  const d = db();
  const g = new GroupCommit(d);
  const results = await Promise.allSettled([
    g.run(() => (d.run("INSERT INTO t VALUES ('a')"), "a")),
    g.run(() => {
      d.run("INSERT INTO t VALUES ('half')");
      throw new Error("broken report");
    }),
    g.run(() => (d.run("INSERT INTO t VALUES ('b')"), "b")),
  ]);
  expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
  expect(values(d)).toEqual(["a", "b"]);
});

test("when the commit itself fails, every piece of work in it is rejected and nothing is stored", async () => {
  const d = db();
  const g = new GroupCommit(d);
  // a deferred constraint is checked at COMMIT: the whole batch fails there
  d.run("CREATE TABLE parent (id INTEGER PRIMARY KEY)");
  d.run("CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)");
  d.run("PRAGMA foreign_keys = ON");
  const results = await Promise.allSettled([
    g.run(() => d.run("INSERT INTO t VALUES ('a')")),
    g.run(() => d.run("INSERT INTO child VALUES (42)")),
  ]);
  expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
  expect(values(d)).toEqual([]);
});

test("a report is answered only once its commit is on disk, and refused when that sync fails", async () => {
  const dir = tempDir();
  const calls: Array<{ done: () => void; fail: (e: Error) => void }> = [];
  const store = openStore(join(dir.path, "outpost.db"), {
    syncWal: () => new Promise((resolve, reject) => calls.push({ done: resolve, fail: reject })),
  });
  try {
    store.sqlite.run("CREATE TABLE t (v TEXT NOT NULL)");
    const g = new GroupCommit(store.sqlite);
    let answered = false;
    const first = g.run(() => (store.sqlite.run("INSERT INTO t VALUES ('a')"), "a")).then((v) => ((answered = true), v));
    await waitFor(() => calls.length === 1, 2000, "the sync");
    await new Promise<void>((r) => setImmediate(r));
    expect(values(store.sqlite)).toEqual(["a"]);
    expect(answered).toBe(false);
    calls[0]!.done();
    expect(await first).toBe("a");
    const second = g.run(() => store.sqlite.run("INSERT INTO t VALUES ('b')"));
    await waitFor(() => calls.length === 2, 2000, "the second sync");
    calls[1]!.fail(new Error("EIO: i/o error, fdatasync"));
    await expect(second).rejects.toThrow("syncing the database's WAL failed");
  } finally {
    store.close();
    dir.cleanup();
  }
});
