import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { heldSync, OPTIONS_OFF, tempDir, waitFor } from "../../test/helpers/harness.ts";
import { Enqueuer } from "./enqueue.ts";


let dir: ReturnType<typeof tempDir>;
let store: Store;
afterEach(() => {
  store.close();
  dir.cleanup();
});

/** A store whose WAL syncs the test finishes by hand (real SQLite file; the sync is what is held). */
function heldStore() {
  const { sync, calls } = heldSync();
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"), { syncWal: sync });
  const failures: unknown[] = [];
  const health = { succeeded() {}, failed: (e: unknown) => failures.push(e) };
  const enqueuer = new Enqueuer(store.sqlite, new EventRecorder(store.sqlite), Date.now, health);
  return { calls, enqueuer, failures };
}

function submit(enqueuer: Enqueuer, to: string) {
  const p = enqueuer.enqueue({
    userId: null, envelopeFrom: "sender@example.org", recipients: [to], suppressed: new Set(),
    body: Buffer.from("Subject: hi\r\n\r\nhello\r\n"), subject: "hi", source: "smtp", options: OPTIONS_OFF,
  });
  const t = { state: "pending" as "pending" | "stored" | "refused", error: undefined as unknown };
  p.then(() => (t.state = "stored"), (e: unknown) => ((t.state = "refused"), (t.error = e)));
  return t;
}

const turn = () => new Promise<void>((r) => setImmediate(r));
const rows = () => (store.sqlite.query("SELECT count(*) AS n FROM recipients").get() as { n: number }).n;

test("a message is reported stored only once the WAL sync returned; while it has not, no answer and no delivery wake-up", async () => {
  const { calls, enqueuer } = heldStore();
  let wakeUps = 0;
  enqueuer.onCommitted = () => wakeUps++;
  const m = submit(enqueuer, "a@dest.test");
  await waitFor(() => calls.length === 1, 2000, "the sync");
  await turn();
  expect(rows()).toBe(1); // committed, not yet shown to be on disk
  expect(m.state).toBe("pending");
  expect(wakeUps).toBe(0);
  calls[0]!.done();
  await waitFor(() => m.state === "stored", 2000, "the message reported stored");
  expect(wakeUps).toBe(1);
});

test("messages that arrive while a sync runs wait for it to end, then share one commit and the next sync", async () => {
  const { calls, enqueuer } = heldStore();
  const first = submit(enqueuer, "a@dest.test");
  await waitFor(() => calls.length === 1, 2000, "the first sync");
  const second = submit(enqueuer, "b@dest.test");
  await turn();
  const third = submit(enqueuer, "c@dest.test");
  await turn();
  expect(calls.length).toBe(1);
  calls[0]!.done();
  await waitFor(() => first.state === "stored", 2000, "the first message stored");
  expect([second.state, third.state]).toEqual(["pending", "pending"]);
  await waitFor(() => calls.length === 2, 2000, "the second sync");
  expect(rows()).toBe(3);
  calls[1]!.done();
  await waitFor(() => second.state === "stored" && third.state === "stored", 2000, "the others stored");
  expect(calls.length).toBe(2);
});

test("a failing sync refuses every message of its commit, tells the health check the disk is failing, and stores nothing after", async () => {
  const { calls, enqueuer, failures } = heldStore();
  const a = submit(enqueuer, "a@dest.test");
  const b = submit(enqueuer, "b@dest.test");
  await waitFor(() => calls.length === 1, 2000, "the sync");
  calls[0]!.fail(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  await waitFor(() => a.state === "refused" && b.state === "refused", 2000, "both refused");
  expect((a.error as { code: string }).code).toBe("SQLITE_IOERR_FSYNC");
  expect(failures).toHaveLength(2);
  // from then on a message is refused without being stored: stored, it would be delivered while its sender retries
  const c = submit(enqueuer, "c@dest.test");
  await waitFor(() => c.state === "refused", 2000, "a later message refused");
  expect(rows()).toBe(2);
});
