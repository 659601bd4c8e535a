import { afterEach, expect, test } from "bun:test";
import { fstatSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { heldSync, tempDir, waitFor } from "../../test/helpers/harness.ts";
import { openStore, type Store } from "./client.ts";
import { commitDurably, fdatasyncOffThread, WalSyncError, type SyncFile } from "./durable.ts";

/** Whether a promise has settled, without waiting for it. */
function track(p: Promise<unknown>) {
  const t = { state: "pending" as "pending" | "resolved" | "rejected", error: undefined as unknown };
  p.then(() => (t.state = "resolved"), (e: unknown) => ((t.state = "rejected"), (t.error = e)));
  return t;
}

/** One event-loop turn: whatever was going to settle from what is done so far has settled. */
const turn = () => new Promise<void>((r) => setImmediate(r));

let dir: ReturnType<typeof tempDir>;
let store: Store | undefined;
afterEach(() => {
  store?.close();
  store = undefined;
  dir.cleanup();
});

function open(syncWal?: SyncFile): Store {
  dir = tempDir();
  store = openStore(`${dir.path}/outpost.db`, syncWal ? { syncWal } : {});
  store.sqlite.exec("CREATE TABLE t (v TEXT NOT NULL)");
  return store;
}

const insert = (s: Store, v: string) => commitDurably(s.sqlite, () => s.sqlite.transaction(() => s.sqlite.run("INSERT INTO t VALUES (?)", [v]))());

test("a durable commit is reported durable only once a sync started after it has returned", async () => {
  const { sync, calls } = heldSync();
  const s = open(sync);
  const first = track(insert(s, "a").durable);
  await waitFor(() => calls.length === 1, 2000, "the first sync");
  await turn();
  // committed (visible) but not yet on disk: not reported durable
  expect(s.sqlite.query("SELECT count(*) AS n FROM t").get()).toEqual({ n: 1 });
  expect(first.state).toBe("pending");
  calls[0]!.done();
  await waitFor(() => first.state === "resolved", 2000, "the first commit reported durable");
});

test("commits made while a sync runs share the next one: three commits, two syncs", async () => {
  const { sync, calls } = heldSync();
  const s = open(sync);
  const a = track(insert(s, "a").durable);
  await waitFor(() => calls.length === 1, 2000, "the first sync");
  // b and c return while the first sync runs: it may have started before their frames were written
  const b = track(insert(s, "b").durable);
  const c = track(insert(s, "c").durable);
  await turn();
  expect(calls.length).toBe(1);
  calls[0]!.done();
  await waitFor(() => a.state === "resolved", 2000, "a reported durable");
  expect([b.state, c.state]).toEqual(["pending", "pending"]);
  await waitFor(() => calls.length === 2, 2000, "the second sync");
  calls[1]!.done();
  await waitFor(() => b.state === "resolved" && c.state === "resolved", 2000, "b and c reported durable");
  expect(calls.length).toBe(2);
});

test("a failing sync rejects its commits with SQLite's fsync error code, and refuses every later commit before it is made", async () => {
  const { sync, calls } = heldSync();
  const s = open(sync);
  const a = track(insert(s, "a").durable);
  await waitFor(() => calls.length === 1, 2000, "the first sync");
  const b = track(insert(s, "b").durable);
  calls[0]!.fail(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  await waitFor(() => a.state === "rejected" && b.state === "rejected", 2000, "both rejected");
  expect(a.error).toBeInstanceOf(WalSyncError);
  expect((a.error as WalSyncError).code).toBe("SQLITE_IOERR_FSYNC");
  expect(String((a.error as Error).message)).toContain("EIO");
  // after a failed fsync the kernel may report the next one clean with the data gone: nothing later is trusted,
  // and a later commit is refused before it is made (committed, it would be delivered though its sender retries)
  expect(() => insert(s, "c")).toThrow("syncing the database's WAL failed");
  expect(s.sqlite.query("SELECT v FROM t ORDER BY v").all()).toEqual([{ v: "a" }, { v: "b" }]);
  expect(calls.length).toBe(1);
});

test("the file synced is the WAL SQLite wrote the commit to, through checkpoints that reset and truncate it", async () => {
  const seen: Array<{ ino: number; content: Buffer }> = [];
  const s = open(async (fd) => {
    seen.push({ ino: fstatSync(fd).ino, content: readFileSync(`${dir.path}/outpost.db-wal`) });
    await fdatasyncOffThread(fd);
  });
  await insert(s, "marker-before-checkpoint").durable;
  expect(seen.at(-1)!.content.includes("marker-before-checkpoint")).toBe(true);
  // a checkpoint that truncates the WAL, then the next commit writes it from the start (a WAL reset)
  s.sqlite.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  await insert(s, "marker-after-reset").durable;
  expect(seen.at(-1)!.content.includes("marker-after-reset")).toBe(true);
  s.sqlite.exec("PRAGMA journal_size_limit = 0");
  s.sqlite.exec("PRAGMA wal_checkpoint(PASSIVE)");
  await insert(s, "marker-after-limit").durable;
  expect(seen.at(-1)!.content.includes("marker-after-limit")).toBe(true);
  expect(new Set(seen.map((x) => x.ino))).toEqual(new Set([statSync(`${dir.path}/outpost.db-wal`).ino]));
});

test("a WAL file replaced behind SQLite's back fails the sync instead of syncing a file SQLite does not write", async () => {
  const s = open();
  await insert(s, "a").durable;
  writeFileSync(`${dir.path}/impostor`, "");
  renameSync(`${dir.path}/impostor`, `${dir.path}/outpost.db-wal`);
  await expect(insert(s, "b").durable).rejects.toThrow("removed or replaced");
});

test("a connection without a WAL (in memory) commits with synchronous=FULL and is durable on return", async () => {
  dir = tempDir();
  store = openStore(":memory:");
  store.sqlite.exec("CREATE TABLE t (v TEXT NOT NULL)");
  const level = () => (store!.sqlite.query("PRAGMA synchronous").get() as { synchronous: number }).synchronous;
  let during = -1;
  await commitDurably(store.sqlite, () => store!.sqlite.transaction(() => (during = level()))()).durable;
  expect(during).toBe(2);
});

test("a durable commit inside another transaction is refused: that commit would be the outer one's", () => {
  const s = open();
  expect(() => s.sqlite.transaction(() => insert(s, "a"))()).toThrow("inside a transaction");
});

test("closing the store: a commit whose sync is running is still answered by it, one waiting for the next is refused", async () => {
  const { sync, calls } = heldSync();
  const s = open(sync);
  const a = track(insert(s, "a").durable);
  await waitFor(() => calls.length === 1, 2000, "the first sync");
  const b = track(insert(s, "b").durable);
  s.close();
  store = undefined;
  calls[0]!.done();
  await waitFor(() => a.state === "resolved" && b.state === "rejected", 2000, "a answered, b refused");
  // SQLite's close checkpointed the WAL into the database and removed it: b is stored, but its sender retries
  expect(String(b.error)).toContain("the store closed before");
});
