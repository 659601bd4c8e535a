import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, withLazyCommit } from "./client.ts";

test("a lazy commit is written, and every commit after it waits for the disk again", () => {
  const dir = mkdtempSync(join(tmpdir(), "outpost-lazy-"));
  const store = openStore(join(dir, "outpost.db"));
  try {
    const level = () => (store.sqlite.query("PRAGMA synchronous").get() as { synchronous: number }).synchronous;
    store.sqlite.exec("CREATE TABLE t (x INTEGER)");
    let during = -1;
    withLazyCommit(store.sqlite, () =>
      store.sqlite.transaction(() => {
        during = level();
        store.sqlite.run("INSERT INTO t VALUES (1)");
      }).immediate(),
    );
    expect(during).toBe(1); // NORMAL
    expect(level()).toBe(2); // FULL again
    expect(() => withLazyCommit(store.sqlite, () => store.sqlite.transaction(() => { throw new Error("no"); })())).toThrow("no");
    expect(level()).toBe(2);
    // nested in a transaction it is that transaction's commit that counts (and SQLite may not change the level)
    store.sqlite.transaction(() => withLazyCommit(store.sqlite, () => store.sqlite.transaction(() => store.sqlite.run("INSERT INTO t VALUES (2)"))()))();
    expect(level()).toBe(2);
    expect((store.sqlite.query("SELECT count(*) AS n FROM t").get() as { n: number }).n).toBe(2);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
