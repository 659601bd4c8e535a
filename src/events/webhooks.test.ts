import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import { createLogger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import { startReceiver, type Receiver } from "../../test/helpers/webhook-receiver.ts";
import { tempDir, waitFor } from "../../test/helpers/harness.ts";
import { Outbox } from "./outbox.ts";
import { EventQuery } from "./query.ts";
import { EventRecorder, type Webhook } from "./record.ts";
import { WebhookWorker, type WebhookWorkerOptions } from "./webhooks.ts";

const T0 = 1_700_000_000_000;
const S = 1000;
const M = 60 * S;
const H = 60 * M;
const DAY = 24 * H;
const SECRET = "whsec-test";

let dir: ReturnType<typeof tempDir>;
let store: Store;
let clock: number;
let receiver: Receiver | null;
let logs: Record<string, unknown>[];
let workers: WebhookWorker[];
let metrics: Metrics;

beforeEach(() => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  clock = T0;
  receiver = null;
  logs = [];
  workers = [];
  metrics = new Metrics();
});

afterEach(async () => {
  for (const w of workers) await w.stop(Date.now());
  await receiver?.stop();
  store.close();
  dir.cleanup();
});

function hook(url: string, extra: Partial<Webhook> = {}): Webhook {
  return { name: "app", url, events: ["queued", "delivered", "deferred", "bounced", "clicked"], userId: null, secret: SECRET, ...extra };
}

function worker(hooks: Webhook[], options: WebhookWorkerOptions = {}, retention = 7 * DAY): WebhookWorker {
  const log = createLogger("debug", (l) => logs.push(JSON.parse(l) as Record<string, unknown>));
  const w = new WebhookWorker({ sqlite: store.sqlite, hooks, retention, log, metrics, now: () => clock, random: () => 0.5, options });
  workers.push(w);
  return w;
}

let n = 0;
function record(recorder: EventRecorder, type: "queued" | "delivered" | "deferred", message = `m${++n}`, userId: number | null = 1): number {
  return recorder.record({
    type, messageId: message as MessageId, recipientId: `r-${message}` as RecipientId, recipient: `${message}@dest.test`,
    userId: userId as UserId | null, details: type === "delivered" ? { reply: "250 ok", mx: "mx.dest.test" } : {}, time: clock,
  });
}

const rows = () =>
  store.sqlite.query<{ event_id: number; hook: string; state: string | null; attempts: number; next_attempt_at: number; last_error: string | null }, []>(
    "SELECT event_id, hook, state, attempts, next_attempt_at, last_error FROM webhook_outbox ORDER BY id",
  ).all();

describe("the outbox worker", () => {
  test("POSTs each event alone, as GET /v1/events shows it, signed with the hook's secret, timestamped and named", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    const recorder = new EventRecorder(store.sqlite, [h]);
    record(recorder, "queued", "m-a");
    record(recorder, "delivered", "m-a");
    expect(await worker([h]).runDue()).toBe(2);
    const page = new EventQuery(store.sqlite).pageFor({ userId: 1 as UserId, since: "", types: [], limit: 10 });
    expect(receiver.received.map((r) => r.event)).toEqual(page.events);
    for (const r of receiver.received) {
      expect(r.signatureOk).toBe(true);
      expect(r.timestamp).toBe(T0 / 1000);
      expect(r.eventId).toBe(r.event.id);
      expect(r.headers.get("content-type")).toBe("application/json");
    }
    expect(rows().map((r) => r.state)).toEqual(["delivered", "delivered"]);
  });

  test("leases and settles commit without waiting for the disk, and the commits after them wait again", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    const level = () => store.sqlite.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous;
    // every transaction the worker opens, with the level its commit will have (1 NORMAL, 2 FULL)
    const levels: number[] = [];
    const open = store.sqlite.transaction.bind(store.sqlite);
    store.sqlite.transaction = ((fn: () => unknown) => (levels.push(level()), open(fn))) as typeof store.sqlite.transaction;
    expect(await worker([h]).runDue()).toBe(1);
    // the start's adoption of unnamed rows (FULL); then the lease, the settle batch, the settle in it (a savepoint),
    // and the next round's lease, which finds nothing: all lazy
    expect(levels).toEqual([2, 1, 1, 1, 1]);
    expect(level()).toBe(2);
    expect(rows().map((r) => r.state)).toEqual(["delivered"]);
  });

  test("a lease lost to a power cut leaves the event due: it is POSTed after the restart", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    // the disk as a power cut would leave it if the lease's commit never reached it: the store before the lease
    store.sqlite.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    const restarted = join(dir.path, "after-power-cut.db");
    copyFileSync(join(dir.path, "outpost.db"), restarted);
    expect(new Outbox(store.sqlite).claim("app", clock, 10, clock + 5 * M)).toHaveLength(1);
    store.close();
    store = openStore(restarted);
    // a start clears leases, but even without it the row is not leased: its lease was never on disk
    expect(await worker([h]).runDue()).toBe(1);
    expect(receiver.received).toHaveLength(1);
  });

  test("a receiver that fails twice gets the event again after about 10 s and 1 m, and the third 2xx ends it", async () => {
    receiver = startReceiver({ secret: SECRET, respond: (_r, i) => (i < 2 ? 500 : 204) });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    const w = worker([h]);
    const tries: number[] = [];
    for (const at of [T0, T0 + 9 * S, T0 + 10 * S, T0 + 69 * S, T0 + 70 * S, T0 + 2 * H]) {
      clock = at;
      if ((await w.runDue()) > 0) tries.push(at - T0);
    }
    expect(tries).toEqual([0, 10 * S, 70 * S]);
    expect(receiver.received.map((r) => r.signatureOk)).toEqual([true, true, true]);
    expect(new Set(receiver.received.map((r) => r.eventId)).size).toBe(1);
    expect(rows()).toMatchObject([{ state: "delivered", attempts: 2, last_error: "HTTP 500: failure 1" }]);
    expect(logs.filter((l) => l.event === "webhook_failed").map((l) => l.next_attempt)).toEqual([
      new Date(T0 + 10 * S).toISOString(), new Date(T0 + 70 * S).toISOString(),
    ]);
  });

  test("an event never answered 2xx is tried on the schedule for 24 h, then expired, logged and counted", async () => {
    receiver = startReceiver({ secret: SECRET, respond: () => 503 });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    const w = worker([h]);
    const tries: number[] = [];
    for (let i = 0; i < 40 && rows()[0]!.state === null; i++) {
      clock = Math.max(clock, rows()[0]!.next_attempt_at);
      if ((await w.runDue()) > 0) tries.push(clock - T0);
    }
    // 10 s, 1 m, 5 m, 15 m, 1 h, then hourly; the last one at the 24 h mark
    expect(tries.slice(0, 6)).toEqual([0, 10 * S, 70 * S, 370 * S, 1270 * S, 1270 * S + H]);
    expect(tries.at(-1)).toBe(DAY);
    expect(tries.length).toBe(29);
    expect(rows()).toMatchObject([{ state: "expired", attempts: 29, last_error: "HTTP 503: failure 28" }]);
    expect(logs.filter((l) => l.event === "webhook_expired")).toHaveLength(1);
    expect(await metrics.render()).toContain('outpost_webhook_expired_total{hook="app"} 1');
  });

  test("a redirect is a failure, not followed", async () => {
    receiver = startReceiver({ secret: SECRET, respond: () => 302 });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    await worker([h]).runDue();
    expect(receiver.received).toHaveLength(1);
    expect(rows()[0]).toMatchObject({ state: null, attempts: 1, last_error: "HTTP 302 (redirects are not followed): ok" });
  });

  test("a message's events reach a hook in order: the next waits until the one before is answered 2xx", async () => {
    // the first request (message a's queued event) fails once; b's events are not held up by it
    receiver = startReceiver({ secret: SECRET, respond: (_r, i) => (i === 0 ? 500 : 200) });
    const h = hook(receiver.url);
    const recorder = new EventRecorder(store.sqlite, [h]);
    const a1 = record(recorder, "queued", "a");
    const b1 = record(recorder, "queued", "b");
    const a2 = record(recorder, "deferred", "a");
    const b2 = record(recorder, "delivered", "b");
    const a3 = record(recorder, "delivered", "a");
    const w = worker([h]);
    await w.runDue();
    expect(receiver.received.map((r) => Number(r.eventId))).toEqual([a1, b1, b2]);
    clock = T0 + 10 * S;
    await w.runDue();
    expect(receiver.received.map((r) => Number(r.eventId))).toEqual([a1, b1, b2, a1, a2, a3]);
    expect(rows().every((r) => r.state === "delivered")).toBe(true);
  });

  test("when an event expires, the message's next event is sent after it", async () => {
    receiver = startReceiver({ secret: SECRET, respond: (r) => (r.event.type === "queued" ? 500 : 200) });
    const h = hook(receiver.url);
    const recorder = new EventRecorder(store.sqlite, [h]);
    record(recorder, "queued", "a");
    clock = T0 + H;
    record(recorder, "delivered", "a");
    const w = worker([h]);
    for (let i = 0; i < 40 && rows()[0]!.state === null; i++) {
      clock = Math.max(clock, rows()[0]!.next_attempt_at);
      await w.runDue();
    }
    expect(rows().map((r) => r.state)).toEqual(["expired", "delivered"]);
    const types = receiver.received.map((r) => r.event.type);
    expect(types.slice(0, -1).every((t) => t === "queued")).toBe(true);
    expect(types.at(-1)).toBe("delivered");
  });

  test("at most `concurrency` requests are out to one hook at once, and a hanging hook does not hold up another", async () => {
    const held: Array<() => void> = [];
    receiver = startReceiver({ secret: SECRET, respond: () => new Promise((r) => held.push(() => r(200))) });
    const fast = startReceiver({ secret: SECRET });
    try {
      const slow = hook(receiver.url);
      const quick = hook(fast.url, { name: "quick" });
      const recorder = new EventRecorder(store.sqlite, [slow, quick]);
      for (let i = 0; i < 10; i++) record(recorder, "queued");
      const w = worker([slow, quick], { concurrency: 3 });
      // rounds as the timer would run them: the quick hook finishes while the slow one holds its three slots
      await waitFor(() => (w.round(), fast.acknowledged.length === 10), 5000, "the quick hook's events");
      expect(receiver.received.length).toBeLessThanOrEqual(3);
      await waitFor(() => {
        while (held.length) held.shift()!();
        w.round();
        return receiver!.acknowledged.length === 10;
      }, 5000, "the slow hook's events");
      expect(new Set(receiver.acknowledged).size).toBe(10);
      expect(receiver.maxOpen()).toBe(3);
    } finally {
      await fast.stop();
    }
  });

  test("a request with no answer fails at the total deadline and is tried again later", async () => {
    receiver = startReceiver({ secret: SECRET, respond: () => new Promise(() => {}) });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    await worker([h], { timeouts: { connectMs: 1000, totalMs: 300 } }).runDue();
    expect(rows()[0]).toMatchObject({ state: null, attempts: 1, last_error: "no complete answer within 0.3 s", next_attempt_at: T0 + 10 * S });
  });

  test("a hook with a user gets only that user's events; one without gets every user's", async () => {
    receiver = startReceiver({ secret: SECRET });
    const mine = hook(receiver.url, { name: "mine", userId: 2 as UserId });
    const all = hook(receiver.url, { name: "all" });
    const recorder = new EventRecorder(store.sqlite, [mine, all]);
    record(recorder, "queued", "u1", 1);
    const theirs = record(recorder, "queued", "u2", 2);
    record(recorder, "queued", "nobody", null);
    expect(rows().map((r) => [r.hook, r.event_id])).toEqual([
      ["all", theirs - 1], ["mine", theirs], ["all", theirs], ["all", theirs + 1],
    ]);
  });

  test("rows of a hook taken out of the config are marked orphaned, logged and counted, and stay so across a restart without the hook", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    const gone = hook("http://127.0.0.1:9/gone", { name: "gone" });
    const recorder = new EventRecorder(store.sqlite, [h, gone]);
    record(recorder, "queued");
    record(recorder, "queued");
    const w = worker([h, gone], { timeouts: { connectMs: 500, totalMs: 500 } });
    w.reconfigure([h]);
    expect(rows().map((r) => [r.hook, r.state])).toEqual([["app", null], ["gone", "orphaned"], ["app", null], ["gone", "orphaned"]]);
    expect(logs.find((l) => l.event === "webhook_orphaned")).toMatchObject({ hook: "gone", rows: 2 });
    expect(await metrics.render()).toContain('outpost_webhook_orphaned_total{hook="gone"} 2');
    await w.runDue();
    expect(receiver.received).toHaveLength(2);
    worker([h]);
    expect(rows().filter((r) => r.state === "orphaned")).toHaveLength(2);
  });

  test("finished rows are deleted after the retention period; pending ones stay", async () => {
    receiver = startReceiver({ secret: SECRET, respond: (r) => (r.event.type === "queued" ? 200 : 500) });
    const h = hook(receiver.url);
    const recorder = new EventRecorder(store.sqlite, [h]);
    record(recorder, "queued");
    record(recorder, "deferred");
    const w = worker([h], {}, 7 * DAY);
    await w.runDue();
    clock = T0 + 7 * DAY;
    expect(w.prune()).toBe(0);
    clock = T0 + 7 * DAY + 1;
    expect(w.prune()).toBe(1);
    expect(rows().map((r) => r.state)).toEqual([null]);
  });

  test("rows leased by a process that died are due again when the next one starts", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    record(new EventRecorder(store.sqlite, [h]), "queued");
    store.sqlite.run("UPDATE webhook_outbox SET lease_until = ?, next_attempt_at = ?", [T0 + M, T0 + M]);
    await worker([h]).runDue();
    expect(receiver.received).toHaveLength(1);
    expect(logs.find((l) => l.event === "webhook_leases_recovered")).toMatchObject({ count: 1 });
  });

  test("rows written before hooks had names are taken by the hook with their URL", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    const id = record(new EventRecorder(store.sqlite, []), "queued");
    store.sqlite.run("INSERT INTO webhook_outbox (event_id, url, next_attempt_at, created_at) VALUES (?, ?, ?, ?)", [id, receiver.url, T0, T0]);
    store.sqlite.run("INSERT INTO webhook_outbox (event_id, url, next_attempt_at, created_at) VALUES (?, ?, ?, ?)", [id, "http://127.0.0.1:9/other", T0, T0]);
    await worker([h]).runDue();
    expect(receiver.received.map((r) => Number(r.eventId))).toEqual([id]);
    expect(rows().map((r) => [r.hook, r.state])).toEqual([["app", "delivered"], ["", "orphaned"]]);
  });

  test("a retry of a hook starts its expired and orphaned events again with a new window, and makes failing ones due", async () => {
    receiver = startReceiver({ secret: SECRET });
    const h = hook(receiver.url);
    const recorder = new EventRecorder(store.sqlite, [h]);
    const [expired, orphaned, failing] = [record(recorder, "queued"), record(recorder, "queued"), record(recorder, "queued")];
    const later = T0 + 2 * DAY;
    store.sqlite.run("UPDATE webhook_outbox SET state = 'expired', attempts = 29, finished_at = ? WHERE event_id = ?", [T0 + DAY, expired]);
    store.sqlite.run("UPDATE webhook_outbox SET state = 'orphaned', finished_at = ? WHERE event_id = ?", [T0, orphaned]);
    store.sqlite.run("UPDATE webhook_outbox SET attempts = 3, failed_at = ?, next_attempt_at = ? WHERE event_id = ?", [T0, later + H, failing]);
    expect(new Outbox(store.sqlite).retryHook("app", later)).toBe(3);
    expect(new Outbox(store.sqlite).retryHook("other", later)).toBe(0);
    expect(store.sqlite.query("SELECT state, attempts, created_at - ? AS window, next_attempt_at - ? AS due FROM webhook_outbox ORDER BY id").all(later, later)).toEqual([
      { state: null, attempts: 0, window: 0, due: 0 },
      { state: null, attempts: 0, window: 0, due: 0 },
      { state: null, attempts: 3, window: T0 - later, due: 0 },
    ]);
    clock = later;
    await worker([h]).runDue();
    expect(receiver.received.map((r) => Number(r.eventId)).sort()).toEqual([expired, orphaned, failing]);
    expect(rows().map((r) => r.state)).toEqual(["delivered", "delivered", "delivered"]);
  });
});
