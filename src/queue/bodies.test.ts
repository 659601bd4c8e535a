import { afterEach, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openStore, StoreOpenError, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import type { MessageId } from "../mail/ids.ts";
import { heldSync, OPTIONS_OFF, tempDir, waitFor } from "../../test/helpers/harness.ts";
import { QueueAdmin } from "./admin.ts";
import { BODY_FILE_MIN_BYTES, openBodyFiles, writeOffThread, type BodyFileOptions, type WriteFile } from "./bodies.ts";
import { Enqueuer } from "./enqueue.ts";
import { QueueInspector } from "./inspect.ts";

let dir: ReturnType<typeof tempDir> | undefined;
let store: Store | undefined;
afterEach(() => {
  store?.close();
  dir?.cleanup();
  store = dir = undefined;
});

const dbPath = () => join(dir!.path, "outpost.db");
const bodiesDir = () => `${dbPath()}-bodies`;
const bodyFilesOnDisk = () => (existsSync(bodiesDir()) ? readdirSync(bodiesDir()).sort() : []);

/** serve's set-up: a real store, its body files checked and written with `opts` */
function serveStore(opts: BodyFileOptions = {}) {
  dir ??= tempDir();
  store = openStore(dbPath());
  const files = openBodyFiles(store.sqlite, opts)!;
  const enqueuer = new Enqueuer(store.sqlite, new EventRecorder(store.sqlite), Date.now, undefined, files);
  return { files, enqueuer };
}

function reopen(opts: BodyFileOptions = {}) {
  store!.close();
  return serveStore(opts);
}

/** A CRLF message of exactly `bytes` bytes, different for each `tag`. */
function message(bytes: number, tag = "x"): Buffer {
  const head = `Subject: ${tag}\r\n\r\n`;
  const line = `${tag.repeat(76).slice(0, 76)}\r\n`;
  const body = line.repeat(Math.ceil(bytes / line.length));
  return Buffer.from((head + body).slice(0, bytes - 2) + "\r\n");
}

function submit(enqueuer: Enqueuer, body: Buffer, to = "a@dest.test") {
  const t = { state: "pending" as "pending" | "stored" | "refused", id: undefined as MessageId | undefined, error: undefined as unknown };
  enqueuer
    .enqueue({ userId: null, envelopeFrom: "s@example.org", recipients: [to], suppressed: new Set(), body, subject: "x", source: "smtp", options: OPTIONS_OFF })
    .then((m) => ((t.state = "stored"), (t.id = m.id)), (e: unknown) => ((t.state = "refused"), (t.error = e)));
  return t;
}

const rowOf = (id: MessageId) =>
  store!.sqlite.query("SELECT length(body) AS inRow, size, body_file AS file, body_offset AS offset FROM messages WHERE id = ?").get(id) as {
    inRow: number; size: number; file: number | null; offset: number | null;
  };
const messageCount = () => (store!.sqlite.query("SELECT count(*) AS n FROM messages").get() as { n: number }).n;

test("a large body is written to a body file and read back whole; the row keeps none of it", async () => {
  const { enqueuer } = serveStore();
  const body = message(50 * 1024);
  const m = submit(enqueuer, body);
  await waitFor(() => m.state === "stored", 5000, "the message stored");
  expect(rowOf(m.id!)).toEqual({ inRow: 0, size: body.length, file: 1, offset: 0 });
  expect(readFileSync(join(bodiesDir(), "00000001.body")).equals(body)).toBe(true);
  // read from the store (no hand-over from intake), after a restart too
  expect(new QueueInspector(store!.sqlite).storedMessage(m.id!)!.equals(body)).toBe(true);
  reopen();
  expect(new QueueInspector(store!.sqlite).storedMessage(m.id!)!.equals(body)).toBe(true);
});

test("a body under the threshold stays in its row, and its commit waits for no body sync", async () => {
  const bodySyncs = heldSync();
  const { enqueuer } = serveStore({ syncFile: bodySyncs.sync });
  const small = message(BODY_FILE_MIN_BYTES - 1);
  const m = submit(enqueuer, small);
  await waitFor(() => m.state === "stored", 5000, "the message stored");
  expect(bodySyncs.calls.length).toBe(0);
  expect(rowOf(m.id!)).toEqual({ inRow: small.length, size: small.length, file: null, offset: null });
  expect(bodyFilesOnDisk()).toEqual([]);
});

test("no row naming a body is committed before that body's sync has returned", async () => {
  const bodySyncs = heldSync();
  const { enqueuer } = serveStore({ syncFile: bodySyncs.sync });
  const m = submit(enqueuer, message(40 * 1024));
  await waitFor(() => bodySyncs.calls.length === 1, 2000, "the body sync");
  await Bun.sleep(0);
  // written, not yet on disk: a WAL sync now (a checkpoint's) must find no row naming it
  expect(bodyFilesOnDisk()).toEqual(["00000001.body"]);
  expect(messageCount()).toBe(0);
  expect(m.state).toBe("pending");
  bodySyncs.calls[0]!.done();
  await waitFor(() => m.state === "stored", 5000, "the message stored");
  expect(messageCount()).toBe(1);
});

/** Writes that wait until the test lets them: `done` writes the bytes for real, `fail` refuses them. */
function heldWrites() {
  const calls: Array<{ done: () => void; fail: (e: Error) => void }> = [];
  const writeFile: WriteFile = (fd, bytes, offset) =>
    new Promise((resolve, reject) =>
      calls.push({ done: () => writeOffThread(fd, bytes, offset).then(resolve, reject), fail: reject }),
    );
  return { writeFile, calls };
}

test("a body's sync starts only once its write has returned, and its row is committed after both", async () => {
  const writes = heldWrites();
  const bodySyncs = heldSync();
  const { enqueuer } = serveStore({ writeFile: writes.writeFile, syncFile: bodySyncs.sync });
  const body = message(40 * 1024);
  const m = submit(enqueuer, body);
  await waitFor(() => writes.calls.length === 1, 2000, "the body's write");
  await Bun.sleep(5);
  expect(bodySyncs.calls.length).toBe(0);
  writes.calls[0]!.done();
  await waitFor(() => bodySyncs.calls.length === 1, 2000, "the body sync");
  expect(readFileSync(join(bodiesDir(), "00000001.body")).equals(body)).toBe(true);
  expect(messageCount()).toBe(0);
  bodySyncs.calls[0]!.done();
  await waitFor(() => m.state === "stored", 5000, "the message stored");
  expect(rowOf(m.id!)).toEqual({ inRow: 0, size: body.length, file: 1, offset: 0 });
});

test("bodies written while a sync runs share the next sync", async () => {
  const bodySyncs = heldSync();
  const { enqueuer } = serveStore({ syncFile: bodySyncs.sync });
  const first = submit(enqueuer, message(20 * 1024, "a"), "a@dest.test");
  await waitFor(() => bodySyncs.calls.length === 1, 2000, "the first sync");
  const more = [submit(enqueuer, message(20 * 1024, "b"), "b@dest.test")];
  await Bun.sleep(5);
  more.push(submit(enqueuer, message(20 * 1024, "c"), "c@dest.test"));
  await Bun.sleep(5);
  expect(bodySyncs.calls.length).toBe(1); // the others wait for the running one to end
  bodySyncs.calls[0]!.done();
  await waitFor(() => bodySyncs.calls.length === 2, 2000, "the second sync");
  bodySyncs.calls[1]!.done();
  await waitFor(() => [first, ...more].every((m) => m.state === "stored"), 5000, "all three stored");
  expect(bodySyncs.calls.length).toBe(2);
});

/** A held write or sync of body files, with the error its failure gives. */
const failing = {
  write: () => {
    const w = heldWrites();
    return { opts: { writeFile: w.writeFile }, calls: w.calls, error: Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }) };
  },
  sync: () => {
    const h = heldSync();
    return { opts: { syncFile: h.sync }, calls: h.calls, error: Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }) };
  },
};

for (const [step, held] of Object.entries(failing)) {
  test(`a failed body ${step} refuses its batch, stores none of it, and the next body goes to a new file`, async () => {
    const { opts, calls, error } = held();
    const { enqueuer } = serveStore(opts);
    const lost = submit(enqueuer, message(30 * 1024, "l"));
    await waitFor(() => calls.length === 1, 2000, `the body ${step}`);
    calls[0]!.fail(error);
    await waitFor(() => lost.state === "refused", 2000, "the batch refused");
    expect(String(lost.error)).toContain(error.code);
    expect(messageCount()).toBe(0);
    const next = submit(enqueuer, message(30 * 1024, "n"));
    await waitFor(() => calls.length === 2, 2000, `the next body ${step}`);
    calls[1]!.done();
    await waitFor(() => next.state === "stored", 5000, "the next message stored");
    // not appended after what the failure left (pages Linux may have dropped, a part written)
    expect(rowOf(next.id!)).toMatchObject({ file: 2, offset: 0 });
    expect(new QueueInspector(store!.sqlite).storedMessage(next.id!)!.equals(message(30 * 1024, "n"))).toBe(true);
  });
}

test("a file is not grown past its limit: the next body starts a new one", async () => {
  const { enqueuer } = serveStore({ maxFileBytes: 64 * 1024 });
  const ms = [submit(enqueuer, message(30 * 1024, "a")), submit(enqueuer, message(30 * 1024, "b")), submit(enqueuer, message(30 * 1024, "c"))];
  await waitFor(() => ms.every((m) => m.state === "stored"), 5000, "all stored");
  expect(ms.map((m) => [rowOf(m.id!).file, rowOf(m.id!).offset])).toEqual([[1, 0], [1, 30 * 1024], [2, 0]]);
  const inspector = new QueueInspector(store!.sqlite);
  expect(ms.map((m) => inspector.storedMessage(m.id!)!.toString("latin1").slice(9, 10))).toEqual(["a", "b", "c"]);
});

test("serve refuses to start when messages name a body file that is gone, and says which", async () => {
  const { enqueuer } = serveStore();
  const m = submit(enqueuer, message(20 * 1024));
  await waitFor(() => m.state === "stored", 5000, "stored");
  store!.close();
  unlinkSync(join(bodiesDir(), "00000001.body"));
  store = openStore(dbPath());
  const refused = (() => {
    try {
      openBodyFiles(store.sqlite);
    } catch (e) {
      return e;
    }
  })();
  expect(refused).toBeInstanceOf(StoreOpenError);
  expect(String(refused)).toContain(`the body file ${join(bodiesDir(), "00000001.body")} is missing, and messages in the database name it`);
});

test("at start, files no one lists and listed files no message names are removed; numbers keep growing", async () => {
  const { enqueuer } = serveStore({ maxFileBytes: 32 * 1024 });
  const kept = submit(enqueuer, message(20 * 1024, "k"));
  const gone = submit(enqueuer, message(20 * 1024, "g"));
  await waitFor(() => kept.state === "stored" && gone.state === "stored", 5000, "stored");
  expect(bodyFilesOnDisk()).toEqual(["00000001.body", "00000002.body"]);
  new QueueAdmin(store!.sqlite).apply("delete", { kind: "message", id: gone.id! });
  expect(bodyFilesOnDisk()).toEqual(["00000001.body", "00000002.body"]); // the newest may be being written
  writeFileSync(join(bodiesDir(), "00000007.body"), "left by a crash before it was listed");
  const { enqueuer: again } = reopen({ maxFileBytes: 32 * 1024 });
  expect(bodyFilesOnDisk()).toEqual(["00000001.body"]);
  const next = submit(again, message(20 * 1024, "n"));
  await waitFor(() => next.state === "stored", 5000, "stored");
  expect(rowOf(next.id!).file).toBe(8);
  expect(new QueueInspector(store!.sqlite).storedMessage(kept.id!)!.equals(message(20 * 1024, "k"))).toBe(true);
});

/** The body files this process has a descriptor of, by name ("… (deleted)" once removed). */
const bodyFilesOpen = () =>
  readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      return target.startsWith(bodiesDir()) ? [target.slice(bodiesDir().length + 1)] : [];
    } catch {
      return []; // the descriptor readdir itself used, closed by now
    }
  });

test("a file serve has moved on from is closed once its rows are committed: removing it frees its space", async () => {
  const { enqueuer } = serveStore({ maxFileBytes: 40 * 1024 });
  const a = submit(enqueuer, message(30 * 1024, "a"), "a@dest.test");
  await waitFor(() => a.state === "stored", 5000, "the first stored");
  const b = submit(enqueuer, message(30 * 1024, "b"), "b@dest.test");
  await waitFor(() => b.state === "stored", 5000, "the second stored");
  expect([rowOf(a.id!).file, rowOf(b.id!).file]).toEqual([1, 2]);
  expect(bodyFilesOpen()).toEqual(["00000002.body"]);
  new QueueAdmin(store!.sqlite).apply("delete", { kind: "message", id: a.id! });
  expect(bodyFilesOnDisk()).toEqual(["00000002.body"]);
  expect(bodyFilesOpen()).toEqual(["00000002.body"]); // none of "00000001.body (deleted)", holding its space
});

test("a file whose messages were deleted while serve still wrote to it is removed when serve moves on from it", async () => {
  const { enqueuer } = serveStore({ maxFileBytes: 40 * 1024 });
  const a = submit(enqueuer, message(30 * 1024, "a"), "a@dest.test");
  await waitFor(() => a.state === "stored", 5000, "the first stored");
  new QueueAdmin(store!.sqlite).apply("delete", { kind: "message", id: a.id! });
  expect(bodyFilesOnDisk()).toEqual(["00000001.body"]); // still being written to
  const b = submit(enqueuer, message(30 * 1024, "b"), "b@dest.test");
  await waitFor(() => b.state === "stored", 5000, "the second stored");
  expect(bodyFilesOnDisk()).toEqual(["00000002.body"]);
  expect(store!.sqlite.query("SELECT id FROM body_files ORDER BY id").all()).toEqual([{ id: 2 }]);
});

test("deleting the last message a body file holds removes that file, unless it is the newest", async () => {
  const { enqueuer } = serveStore({ maxFileBytes: 32 * 1024 });
  const ms = ["a", "b", "c"].map((t) => submit(enqueuer, message(20 * 1024, t), `${t}@dest.test`));
  await waitFor(() => ms.every((m) => m.state === "stored"), 5000, "stored");
  expect(bodyFilesOnDisk()).toEqual(["00000001.body", "00000002.body", "00000003.body"]);
  const admin = new QueueAdmin(store!.sqlite);
  admin.apply("delete", { kind: "message", id: ms[1]!.id! });
  expect(bodyFilesOnDisk()).toEqual(["00000001.body", "00000003.body"]);
  admin.apply("delete", { kind: "all", filter: {} });
  expect(bodyFilesOnDisk()).toEqual(["00000003.body"]);
  expect(store!.sqlite.query("SELECT id FROM body_files ORDER BY id").all()).toEqual([{ id: 3 }]);
});

test("a file a batch waiting for its body sync wrote to is not removed, even once no committed message names it", async () => {
  const bodySyncs = heldSync();
  const { enqueuer } = serveStore({ syncFile: bodySyncs.sync, maxFileBytes: 40 * 1024 });
  const first = submit(enqueuer, message(16 * 1024, "a"), "a@dest.test");
  await waitFor(() => bodySyncs.calls.length === 1, 2000, "the first body sync");
  bodySyncs.calls[0]!.done();
  await waitFor(() => first.state === "stored", 5000, "the first stored");
  // one batch: its first body still fits in file 1, the second starts file 2
  const batch = [submit(enqueuer, message(16 * 1024, "b"), "b@dest.test"), submit(enqueuer, message(16 * 1024, "c"), "c@dest.test")];
  await waitFor(() => bodySyncs.calls.length === 3, 2000, "the batch's body syncs (one a file)");
  expect(bodyFilesOnDisk()).toEqual(["00000001.body", "00000002.body"]);
  // file 1 is not serve's current file any more, and no committed message names it once the first is deleted
  new QueueAdmin(store!.sqlite).apply("delete", { kind: "message", id: first.id! });
  expect(bodyFilesOnDisk()).toEqual(["00000001.body", "00000002.body"]);
  for (const c of bodySyncs.calls.slice(1)) c.done();
  await waitFor(() => batch.every((m) => m.state === "stored"), 5000, "the batch stored");
  expect(new QueueInspector(store!.sqlite).storedMessage(batch[0]!.id!)!.equals(message(16 * 1024, "b"))).toBe(true);
  // committed now, file 1 sealed: it goes with the last message naming it
  new QueueAdmin(store!.sqlite).apply("delete", { kind: "message", id: batch[0]!.id! });
  expect(bodyFilesOnDisk()).toEqual(["00000002.body"]);
});
