import { afterEach, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { tempDir, waitFor } from "../../test/helpers/harness.ts";
import { BACKSTOP_PAGES } from "./checkpoint.ts";
import { openStore, type Store } from "./client.ts";

const open: Array<{ store: Store; cleanup: () => void }> = [];
afterEach(() => {
  for (const o of open.splice(0)) {
    o.store.close();
    o.cleanup();
  }
});

function store(onFailure: (why: string) => void = () => {}): { store: Store; path: string } {
  const dir = tempDir("outpost-ckpt-");
  const path = join(dir.path, "outpost.db");
  const s = openStore(path, { checkpointThread: { onFailure } });
  open.push({ store: s, cleanup: dir.cleanup });
  return { store: s, path };
}

const autocheckpoint = (s: Store) => s.sqlite.query<{ wal_autocheckpoint: number }, []>("PRAGMA wal_autocheckpoint").get()!.wal_autocheckpoint;

test("with a checkpoint thread, committed pages reach the database file without the connection checkpointing", async () => {
  const { store: s, path } = store();
  // only far behind does the connection checkpoint itself
  expect(autocheckpoint(s)).toBe(BACKSTOP_PAGES);
  s.sqlite.exec("CREATE TABLE t (b BLOB)");
  const before = statSync(path).size;
  // ~130 pages: far below any automatic checkpoint of the connection (1000 pages by default)
  s.sqlite.query("INSERT INTO t VALUES (?)").run(Buffer.alloc(512 * 1024, 7));
  await waitFor(() => statSync(path).size > before + 512 * 1024, 5000, "the WAL copied into the database file");
});

test("a checkpoint thread that cannot open the database is told, and the connection checkpoints itself again", async () => {
  const { store: s, path } = store();
  const failures: string[] = [];
  const { CheckpointThread } = await import("./checkpoint.ts");
  // a thread pointed at a file that is not there fails at its start, as it would on a damaged disk
  new CheckpointThread(s.sqlite, `${path}-missing`, (why) => failures.push(why));
  expect(autocheckpoint(s)).toBe(BACKSTOP_PAGES);
  await waitFor(() => failures.length > 0, 5000, "the failure told");
  expect(autocheckpoint(s)).toBe(1000);
});
