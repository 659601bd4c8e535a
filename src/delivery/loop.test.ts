/**
 * Scheduler tests against a recording fake transport (no sockets) and a real SQLite queue: grouping, throttle
 * limits, deferral, sandbox, isolation of a throttled destination, hand-back of jobs held too long, and stop().
 */
import { afterEach, describe, expect, spyOn, test } from "bun:test";
import { parseConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { createLogger, silentLogger, type Logger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import { QueueClaimer } from "../queue/claim.ts";
import { Enqueuer, type EnqueuedMessage } from "../queue/enqueue.ts";
import { tempDir, waitFor } from "../../test/helpers/harness.ts";
import { pastEveryId } from "../../test/helpers/ids.ts";
import { DeliveryLoop, signalOf, type ClaimSource, type LoopDeps } from "./loop.ts";
import { OutcomeRecorder } from "./outcome.ts";
import {
  ConnectFailure, LoopsBackToMyself, type Connection, type Destination, type OutboundMessage, type RecipientResult, type RouteResult, type Router, type Transport,
} from "./types.ts";

type Behaviour = (msg: OutboundMessage) => RecipientResult[] | Promise<RecipientResult[]>;

/** A transport that records what it was asked and answers from a script per destination key. */
class FakeTransport implements Transport {
  open = new Map<string, number>();
  maxOpen = new Map<string, number>();
  connects = 0;
  sent: { key: string; msg: OutboundMessage; conn: number }[] = [];
  refuse = new Set<string>();
  throttleGreeting = new Set<string>();
  /** destinations whose every address is one of our own listeners */
  loops = new Set<string>();
  sendDelayMs = 0;
  /** the server has silently closed every connection open now (a kept connection turns out dead) */
  killOpen = false;
  /** closes every open connection the way a server's close is noticed: usable turns false */
  closers: (() => void)[] = [];
  behaviour: Behaviour = (m) => m.recipients.map((r) => ({ recipientId: r.id, outcome: "delivered", code: 250, enhanced: "2.0.0", reply: "ok" }));

  async connect(dest: Destination): Promise<Connection> {
    this.connects++;
    await Bun.sleep(1);
    if (this.refuse.has(dest.key)) throw new ConnectFailure("connect ECONNREFUSED", false, 0, dest.hosts[0]?.host);
    if (this.loops.has(dest.key)) throw new LoopsBackToMyself(dest.key, dest.hosts[0]?.host);
    if (this.throttleGreeting.has(dest.key)) throw new ConnectFailure("421 4.7.0 too many connections", true, 421, dest.hosts[0]?.host);
    const n = (this.open.get(dest.key) ?? 0) + 1;
    this.open.set(dest.key, n);
    this.maxOpen.set(dest.key, Math.max(n, this.maxOpen.get(dest.key) ?? 0));
    const id = this.connects;
    const self = this;
    let closed = false;
    let dead = false;
    const conn = {
      mx: dest.hosts[0]!.host,
      sent: 0,
      get usable() {
        return !closed;
      },
      async send(msg: OutboundMessage) {
        conn.sent++;
        if (self.killOpen) {
          self.killOpen = false;
          dead = true;
        }
        if (dead || closed) return msg.recipients.map((r) => ({ recipientId: r.id, outcome: "deferred" as const, code: 0, enhanced: "4.4.2", reply: "connection closed" }));
        self.sent.push({ key: dest.key, msg, conn: id });
        if (self.sendDelayMs) await Bun.sleep(self.sendDelayMs);
        return (await self.behaviour(msg)).map((r) => ({ ...r, mx: conn.mx }));
      },
      async close() {
        if (closed) return;
        closed = true;
        self.open.set(dest.key, (self.open.get(dest.key) ?? 1) - 1);
      },
    };
    this.closers.push(() => void conn.close());
    return conn;
  }
}
/** Domains "a*.test" go to key "mx-a", "b*.test" to "mx-b"; "nullmx.test" has a null MX. */
const router: Router = {
  async route(domain: string): Promise<RouteResult> {
    if (domain === "nullmx.test") return { kind: "permanent", enhanced: "5.1.10", reason: "null MX" };
    const key = `mx-${domain[0]}`;
    return { kind: "ok", destination: { key, hosts: [{ host: `${key}.test`, port: 25, preference: 0 }], tls: "opportunistic", static: false } };
  },
};

interface Env {
  store: Store;
  /** every log line, parsed */
  logged: Record<string, unknown>[];
  enqueuer: Enqueuer;
  loop: DeliveryLoop;
  transport: FakeTransport;
  dsns: unknown[];
  config: Config;
  metrics: Metrics;
  cleanup: () => void;
}

let env: Env | null = null;
afterEach(async () => {
  if (!env) return;
  await env.loop.stop();
  env.store.close();
  env.cleanup();
  env = null;
});

interface SetupExtras {
  /** the queue as the loop sees it: wrap the real one to inject store failures */
  claimer?: (real: QueueClaimer) => ClaimSource;
  /** runs one settle batch's transaction: wrap to make commits fail */
  batch?: (run: (fn: () => void) => void) => (fn: () => void) => void;
  personalize?: LoopDeps["personalize"];
  /** the clock of the loop, its throttle, the queue's claims and enqueues, and outcomes (timers still run in real time) */
  now?: () => number;
}

/** A logger that keeps every line, parsed. */
function recordingLogger(lines: Record<string, unknown>[]): Logger {
  return createLogger("debug", (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
}

function setup(toml = "", loopOpts: ConstructorParameters<typeof DeliveryLoop>[0]["options"] = {}, extras: SetupExtras = {}): Env {
  const dir = tempDir();
  const config: Config = parseConfig(`data_dir = ${JSON.stringify(dir.path)}\nhostname = "outpost.test"\n${toml}`, {
    file: null, baseDir: dir.path, env: {},
  });
  const store = openStore(config.database.path);
  const events = new EventRecorder(store.sqlite, []);
  const enqueuer = new Enqueuer(store.sqlite, events, extras.now);
  const dsns: unknown[] = [];
  const metrics = new Metrics();
  const outcomes = new OutcomeRecorder({
    sqlite: store.sqlite, events, delivery: config.delivery, bounceDomain: "", hostname: config.hostname, log: silentLogger,
    metrics, now: extras.now,
    intake: { acceptNow: (s) => (dsns.push(s), { id: "dsn" as never, messageIdHeader: null, recipients: [] }) },
  });
  const transport = new FakeTransport();
  const logged: Record<string, unknown>[] = [];
  const queue = new QueueClaimer(store.sqlite, extras.now);
  const batch = (fn: () => void) => store.sqlite.transaction(fn).immediate();
  const loop = new DeliveryLoop({
    config: config.delivery, claimer: extras.claimer?.(queue) ?? queue, outcomes, router, transport, log: recordingLogger(logged),
    batch: extras.batch?.(batch) ?? batch,
    personalize: extras.personalize,
    now: extras.now,
    options: { idleMs: 200, throttle: { backoffMs: 300, deadMs: 500 }, ...loopOpts },
  });
  enqueuer.onCommitted = () => loop.wake();
  env = { store, logged, enqueuer, loop, transport, dsns, config, metrics, cleanup: dir.cleanup };
  return env;
}

function enqueue(e: Env, recipients: string[], from = "sender@example.com"): Promise<EnqueuedMessage> {
  return e.enqueuer.enqueue({
    userId: null, envelopeFrom: from, recipients, suppressed: new Set(), body: Buffer.from("Subject: hi\r\n\r\nhello\r\n"),
    subject: "hi", source: "api", options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: true, unsubscribe: false },
  });
}

function statuses(e: Env): Record<string, string> {
  const rows = e.store.sqlite.query("SELECT address, status FROM recipients").all() as { address: string; status: string }[];
  return Object.fromEntries(rows.map((r) => [r.address, r.status]));
}

function pendingCount(e: Env): number {
  return (e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get() as { n: number }).n;
}

describe("delivery loop", () => {
  test("sends all recipients of one message at one destination in one transaction", async () => {
    const e = setup();
    e.loop.start();
    await enqueue(e, ["x@a1.test", "y@a2.test", "z@b1.test"]);
    await waitFor(() => pendingCount(e) === 0, 5000, "delivery");
    expect(statuses(e)).toEqual({ "x@a1.test": "delivered", "y@a2.test": "delivered", "z@b1.test": "delivered" });
    const toA = e.transport.sent.filter((s) => s.key === "mx-a");
    expect(toA.length).toBe(1);
    expect(toA[0]!.msg.recipients.map((r) => r.address).sort()).toEqual(["x@a1.test", "y@a2.test"]);
    expect(toA[0]!.msg.envelopeFrom).toBe("sender@example.com");
  });

  test("never opens more connections to a destination than per_destination_connections", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 3\n`);
    e.transport.sendDelayMs = 20;
    e.loop.start();
    for (let i = 0; i < 40; i++) await enqueue(e, [`r${i}@a.test`]);
    await waitFor(() => pendingCount(e) === 0, 10_000, "delivery");
    expect(e.transport.maxOpen.get("mx-a")).toBe(3);
    expect(e.transport.sent.length).toBe(40);
  });

  test("never opens more connections in all than delivery.concurrency, and every destination gets its turn", async () => {
    const e = setup(`[delivery]\nconcurrency = 2\nper_destination_connections = 5\n`, { idleMs: 1_000 });
    e.transport.sendDelayMs = 10;
    let maxTotal = 0;
    const behave = e.transport.behaviour;
    e.transport.behaviour = (m) => {
      maxTotal = Math.max(maxTotal, [...e.transport.open.values()].reduce((a, b) => a + b, 0));
      return behave(m);
    };
    e.loop.start();
    for (let i = 0; i < 10; i++) await enqueue(e, [`x${i}@a.test`]);
    for (let i = 0; i < 10; i++) await enqueue(e, [`y${i}@b.test`]);
    await waitFor(() => pendingCount(e) === 0, 10_000, "delivery to both");
    expect(maxTotal).toBeLessThanOrEqual(2);
    expect(e.transport.sent.filter((s) => s.key === "mx-b").length).toBe(10);
  });

  test("reuses a connection for up to messages_per_connection messages", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 1\nmessages_per_connection = 4\n`);
    for (let i = 0; i < 10; i++) await enqueue(e, [`r${i}@a.test`]);
    e.loop.start();
    await waitFor(() => pendingCount(e) === 0, 5000, "delivery");
    const perConn = new Map<number, number>();
    for (const s of e.transport.sent) perConn.set(s.conn, (perConn.get(s.conn) ?? 0) + 1);
    expect([...perConn.values()]).toEqual([4, 4, 2]);
  });

  test("a destination's rate holds across connections: one message per connection does not reset it", async () => {
    const e = setup(`[delivery]\nmessages_per_connection = 1\nper_destination_connections = 1\n[delivery.destination."a.test"]\nrate = "10/min"\n`);
    for (let i = 0; i < 40; i++) await enqueue(e, [`x${i}@a.test`]);
    e.loop.start();
    await waitFor(() => e.transport.sent.length >= 1, 5000, "first send");
    // 10/min allows the first message at once and the next 6 s later: 1.5 s may see one, never more than two
    await Bun.sleep(1_500);
    expect(e.transport.sent.length).toBeLessThanOrEqual(2);
  });

  test("a message sent on a kept connection that the server closed goes again at once on a fresh one", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 1\n`, { idleMs: 2_000 });
    e.loop.start();
    await enqueue(e, ["first@a.test"]);
    await waitFor(() => statuses(e)["first@a.test"] === "delivered", 5000, "first delivery");
    e.transport.killOpen = true; // the idle connection died meanwhile
    await enqueue(e, ["second@a.test"]);
    await waitFor(() => statuses(e)["second@a.test"] === "delivered", 5000, "second delivery");
    const row = e.store.sqlite.query("SELECT attempts FROM recipients WHERE address = 'second@a.test'").get() as { attempts: number };
    expect(row.attempts).toBe(1);
    expect(new Set(e.transport.sent.map((x) => x.conn)).size).toBe(2);
  });

  test("a job for an idle connection the server has closed goes to a fresh connection", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 3\n`, { idleMs: 2_000 });
    e.loop.start();
    await Promise.all([0, 1, 2].map((i) => enqueue(e, [`first${i}@a.test`])));
    await waitFor(() => pendingCount(e) === 0, 5000, "first deliveries");
    for (const close of e.transport.closers.splice(0)) close();
    await enqueue(e, ["second@a.test"]);
    await waitFor(() => statuses(e)["second@a.test"] === "delivered", 5000, "second delivery");
    const row = e.store.sqlite.query("SELECT attempts FROM recipients WHERE address = 'second@a.test'").get() as { attempts: number };
    expect(row.attempts).toBe(1);
  });

  test("defers the waiting recipients with the failure text when no connection can be had", async () => {
    const e = setup();
    e.transport.refuse.add("mx-a");
    e.loop.start();
    await enqueue(e, ["x@a.test"]);
    await waitFor(() => statuses(e)["x@a.test"] === "deferred", 5000, "deferral");
    const row = e.store.sqlite.query("SELECT last_reply, attempts, lease_until FROM recipients").get() as Record<string, unknown>;
    expect(row.last_reply).toContain("ECONNREFUSED");
    expect(row.attempts).toBe(1);
    expect(row.lease_until).toBeNull();
  });

  test("a destination that throttles does not hold up mail for another", async () => {
    const e = setup();
    e.transport.throttleGreeting.add("mx-a");
    e.loop.start();
    for (let i = 0; i < 5; i++) await enqueue(e, [`x${i}@a.test`]);
    await enqueue(e, ["y@b.test"]);
    await waitFor(() => statuses(e)["y@b.test"] === "delivered", 5000, "delivery to b");
    await waitFor(() => statuses(e)["x0@a.test"] === "deferred", 5000, "deferral at a");
    const a = e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a")!;
    expect(a.limit).toBeLessThan(5);
  });

  test("a destination that may take one message a minute does not fill the window and hold up mail for another", async () => {
    const e = setup(`[delivery.destination."a.test"]\nrate = "1/min"\n`, { window: 100, leaseMs: 120_000 });
    for (let i = 0; i < 30; i++) await enqueue(e, Array.from({ length: 10 }, (_, j) => `x${i}-${j}@a.test`));
    e.loop.start();
    await waitFor(() => e.transport.sent.length >= 1, 5000, "the first message to a.test");
    await enqueue(e, ["y@b.test"]);
    await waitFor(() => statuses(e)["y@b.test"] === "delivered", 5000, "delivery to b.test");
    const leased = e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE domain = 'a.test' AND lease_until IS NOT NULL").get() as { n: number };
    // a quarter of the window waits in its lanes, a claim may overshoot that, and its connection holds one job
    expect(leased.n).toBeLessThan(100);
  });

  test("a destination at one message a minute keeps its other recipients in the queue, unleased and unattempted, until its next token; mail to another flows meanwhile", async () => {
    let offset = 0;
    const now = () => Date.now() + offset;
    const e = setup(`[delivery.destination."a.test"]\nrate = "1/min"\n`, { leaseMs: 120_000 }, { now });
    for (let i = 0; i < 30; i++) await enqueue(e, Array.from({ length: 10 }, (_, j) => `x${i}-${j}@a.test`));
    e.loop.start();
    const waitingAtA = () => e.store.sqlite.query(
      "SELECT count(*) AS n, sum(lease_until IS NOT NULL) AS leased, sum(attempts) AS attempts, min(next_attempt_at) AS due FROM recipients WHERE domain = 'a.test' AND status = 'queued'",
    ).get() as { n: number; leased: number; attempts: number; due: number };
    await waitFor(() => e.transport.sent.length === 1 && waitingAtA().leased === 0, 5000, "one message to a.test, the rest back in the queue");
    const firstAt = now();
    // due again with the next token (a minute after the first), not tried meanwhile
    expect(waitingAtA()).toMatchObject({ n: 290, leased: 0, attempts: 0 });
    expect(waitingAtA().due).toBeGreaterThan(firstAt + 50_000);
    expect(e.logged.some((l) => l.event === "delivery_destination_held_back" && l.destination === "mx-a" && l.reason === "rate")).toBe(true);
    await enqueue(e, ["y@b.test"]);
    await waitFor(() => statuses(e)["y@b.test"] === "delivered", 5000, "delivery to b.test");
    expect(waitingAtA()).toMatchObject({ n: 290, leased: 0 });
    expect(e.transport.sent.filter((s) => s.key === "mx-a").length).toBe(1);
    // a minute later the next token is there: one more message, and the rest wait for the one after; the claim
    // took a few of a.test's rows (one message's worth goes), not a quarter of the window, to hand back
    const released = spyOn(QueueClaimer.prototype, "release");
    try {
      offset += 61_000;
      e.loop.wake();
      await waitFor(() => e.transport.sent.filter((s) => s.key === "mx-a").length === 2 && waitingAtA().leased === 0, 5000, "the second message to a.test");
      expect(waitingAtA()).toMatchObject({ n: 280, leased: 0, attempts: 0 });
      expect(released.mock.calls.flatMap(([ids]) => ids).length).toBeLessThanOrEqual(40);
    } finally {
      released.mockRestore();
    }
  });

  test("a dead destination's 1,000 recipients cost a few connections and one deferred message; the rest wait in the queue unclaimed, and mail to another flows", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 5\n`, { throttle: { backoffMs: 300, deadMs: 60_000 } });
    e.transport.refuse.add("mx-a");
    for (let i = 0; i < 100; i++) await enqueue(e, Array.from({ length: 10 }, (_, j) => `x${i}@a${j}.test`));
    const settles = spyOn(OutcomeRecorder.prototype, "settle");
    try {
      e.loop.start();
      const atA = () => e.store.sqlite.query(
        "SELECT sum(status = 'deferred') AS deferred, sum(lease_until IS NOT NULL) AS leased, sum(attempts) AS attempts FROM recipients WHERE domain LIKE 'a%'",
      ).get() as { deferred: number; leased: number; attempts: number };
      await waitFor(() => e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a")?.dead === true && atA().leased === 0, 5000, "mx-a dead, its mail back in the queue");
      await enqueue(e, ["y@b.test"]);
      await waitFor(() => statuses(e)["y@b.test"] === "delivered", 5000, "delivery to b.test");
      // one message's ten recipients carry the failure; the other 990 were never tried
      expect(atA()).toEqual({ deferred: 10, leased: 0, attempts: 10 });
      // five at once, and while fewer than three had failed in a row, one more for each that did; then one to mx-b
      expect(e.transport.connects).toBeLessThanOrEqual(5 + 3 + 1);
      expect(settles.mock.calls.length).toBe(2); // the deferred message, and y@b.test
    } finally {
      settles.mockRestore();
    }
  });

  test("mail for a destination in a long back-off goes back to the queue for the end of it, unattempted", async () => {
    const e = setup("", { throttle: { backoffMs: 5_000 } });
    e.transport.throttleGreeting.add("mx-a");
    e.loop.start();
    await enqueue(e, ["x@a.test"]);
    await waitFor(() => statuses(e)["x@a.test"] === "deferred", 5000, "the 421 greeting");
    const connects = e.transport.connects;
    const t0 = Date.now();
    await enqueue(e, ["y@a.test"]);
    const row = () => e.store.sqlite.query("SELECT status, attempts, lease_until, next_attempt_at FROM recipients WHERE address = 'y@a.test'")
      .get() as { status: string; attempts: number; lease_until: number | null; next_attempt_at: number };
    await waitFor(() => row().lease_until === null && row().next_attempt_at > t0 + 2_000, 5000, "the hand-back");
    expect(row()).toMatchObject({ status: "queued", attempts: 0 });
    await enqueue(e, ["z@b.test"]);
    await waitFor(() => statuses(e)["z@b.test"] === "delivered", 5000, "delivery to b meanwhile");
    expect(e.transport.connects).toBe(connects + 1); // only the one to b
  });

  test("a 421 reply lowers the destination's window, and successes raise it again", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 4\nretry = ["1s"]\n`);
    let throttling = true;
    e.transport.behaviour = (m) => m.recipients.map((r) => throttling
      ? { recipientId: r.id, outcome: "deferred", code: 421, enhanced: "4.7.0", reply: "too many messages, slow down" }
      : { recipientId: r.id, outcome: "delivered", code: 250, enhanced: "2.0.0", reply: "ok" });
    e.loop.start();
    for (let i = 0; i < 8; i++) await enqueue(e, [`x${i}@a.test`]);
    await waitFor(() => (e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a")?.limit ?? 4) <= 2, 5000, "cut");
    throttling = false;
    await waitFor(() => pendingCount(e) === 0, 15_000, "delivery after recovery");
    for (let i = 0; i < 30; i++) await enqueue(e, [`y${i}@a.test`]);
    await waitFor(() => pendingCount(e) === 0, 10_000, "more delivery");
    const a = e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a");
    // recovered: either back to the configured window (then forgotten as pristine) or rising
    expect(a === undefined || a.limit >= 3).toBe(true);
  });

  test("a dead destination defers new mail without connecting, and a probe revives it later", async () => {
    const e = setup(`[delivery]\nretry = ["1h"]\n`, { throttle: { backoffMs: 100, deadAfter: 3, deadMs: 800 } });
    e.transport.refuse.add("mx-a");
    e.loop.start();
    for (let i = 0; i < 3; i++) {
      await enqueue(e, [`x${i}@a.test`]);
      await waitFor(() => statuses(e)[`x${i}@a.test`] === "deferred", 5000, `deferral ${i}`);
    }
    await waitFor(() => e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a")?.dead, 2000, "dead");
    const connects = e.transport.connects;
    await enqueue(e, ["late@a.test"]);
    await waitFor(() => statuses(e)["late@a.test"] === "deferred", 2000, "deferral while dead");
    expect(e.transport.connects).toBe(connects);
    const late = e.store.sqlite.query("SELECT last_reply FROM recipients WHERE address = 'late@a.test'").get() as { last_reply: string };
    expect(late.last_reply).toContain("ECONNREFUSED");
    e.transport.refuse.delete("mx-a");
    await enqueue(e, ["revived@a.test"]);
    await waitFor(() => statuses(e)["revived@a.test"] === "delivered", 5000, "delivery after the dead time");
    expect(e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a")?.dead ?? false).toBe(false);
  }, 15_000);

  test("mail for a destination that loops back to ourselves bounces with 5.4.6, each recipient naming its domain", async () => {
    const e = setup("", { throttle: { backoffMs: 100, deadAfter: 2, deadMs: 60_000 } });
    e.transport.loops.add("mx-a");
    e.loop.start();
    for (let i = 0; i < 4; i++) await enqueue(e, [`x@a${i}.test`]);
    await enqueue(e, ["y@b.test"]);
    await waitFor(() => pendingCount(e) === 0, 5000, "every recipient settled");
    const rows = e.store.sqlite.query("SELECT address, status, last_reply, attempts FROM recipients WHERE address LIKE 'x@%' ORDER BY address").all();
    expect(rows).toEqual([0, 1, 2, 3].map((i) => ({ address: `x@a${i}.test`, status: "bounced", last_reply: `mail for a${i}.test loops back to myself`, attempts: 1 })));
    expect(statuses(e)["y@b.test"]).toBe("delivered");
    // not a dead destination: more mail for it bounces the same way, at once, instead of waiting out a dead time
    expect(e.loop.throttle.snapshot().destinations.find((d) => d.key === "mx-a")?.dead ?? false).toBe(false);
    await enqueue(e, ["z@a9.test"]);
    await waitFor(() => statuses(e)["z@a9.test"] === "bounced", 5000, "the next bounce");
    const bounced = e.store.sqlite.query("SELECT details FROM events WHERE recipient = 'z@a9.test' AND type = 'bounced'").get() as { details: string } | null;
    expect(JSON.parse(bounced?.details ?? "{}")).toMatchObject({ status: "5.4.6", reply: "mail for a9.test loops back to myself" });
  });

  test("a null MX bounces at once without connecting", async () => {
    const e = setup();
    e.loop.start();
    await enqueue(e, ["x@nullmx.test"]);
    await waitFor(() => statuses(e)["x@nullmx.test"] === "bounced", 5000, "bounce");
    expect(e.transport.connects).toBe(0);
  });

  test("in sandbox mode records delivered with reply sandbox and never connects", async () => {
    const e = setup(`[delivery]\nsandbox = true\n`);
    e.loop.start();
    await enqueue(e, ["x@a.test", "y@b.test"]);
    await waitFor(() => pendingCount(e) === 0, 5000, "sandbox delivery");
    expect(statuses(e)).toEqual({ "x@a.test": "delivered", "y@b.test": "delivered" });
    expect(e.transport.connects).toBe(0);
    const ev = e.store.sqlite.query("SELECT details FROM events WHERE type = 'delivered'").all() as { details: string }[];
    expect(ev.length).toBe(2);
    expect(ev[0]!.details).toContain("sandbox");
  });

  test("delivery.sandbox applies to mail routed after a reload: what was routed before goes as it was routed", async () => {
    const e = setup(`[delivery]\nsandbox = true\nper_destination_connections = 1\nmessages_per_connection = 1\n`);
    e.transport.sendDelayMs = 50;
    e.loop.start();
    await enqueue(e, ["x@a.test"]);
    await waitFor(() => statuses(e)["x@a.test"] === "delivered", 5000, "sandbox delivery");
    expect(e.transport.connects).toBe(0);
    e.loop.reconfigure({ ...e.config.delivery, sandbox: false }, router, e.transport);
    await enqueue(e, ["y@a.test"]);
    await waitFor(() => statuses(e)["y@a.test"] === "delivered", 5000, "real delivery");
    expect(e.transport.sent.map((s) => s.msg.recipients[0]!.address)).toEqual(["y@a.test"]);
    // routed for real, then sandbox turned on while it waits: it still goes out for real
    await enqueue(e, ["z1@b.test", "z2@b.test"]);
    await enqueue(e, ["w@b.test"]);
    const leased = () => (e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE address = 'w@b.test' AND lease_until IS NOT NULL").get() as { n: number }).n;
    await waitFor(() => e.transport.sent.some((s) => s.key === "mx-b") && leased() === 1, 5000, "sending to mx-b, w@b.test claimed");
    e.loop.reconfigure({ ...e.config.delivery, sandbox: true }, router, e.transport);
    await waitFor(() => pendingCount(e) === 0, 5000, "all delivered");
    expect(e.transport.sent.filter((s) => s.key === "mx-b").flatMap((s) => s.msg.recipients.map((r) => r.address)).sort()).toEqual(["w@b.test", "z1@b.test", "z2@b.test"]);
  });

  test("stop hands back recipients that have not started, leaving none leased", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 1\n`);
    e.transport.sendDelayMs = 100;
    for (let i = 0; i < 20; i++) await enqueue(e, [`x${i}@a.test`]);
    e.loop.start();
    await waitFor(() => e.transport.sent.length >= 1, 5000, "first send");
    await e.loop.stop();
    const leased = e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get() as { n: number };
    expect(leased.n).toBe(0);
    const delivered = Object.values(statuses(e)).filter((s) => s === "delivered").length;
    expect(delivered).toBeGreaterThanOrEqual(1);
    expect(delivered).toBeLessThan(20);
  });

  test("stop keeps to the deadline it is given: a stuck transaction is handed back then, leaving none leased", async () => {
    const e = setup();
    e.transport.sendDelayMs = 2_000;
    await enqueue(e, ["stuck@a.test"]);
    e.loop.start();
    await waitFor(() => e.transport.sent.length >= 1, 5000, "first send");
    const t0 = Date.now();
    await e.loop.stop(t0 + 300);
    expect(Date.now() - t0).toBeLessThan(1_500); // its own 25 s default would have been waited out
    const rows = () => e.store.sqlite.query("SELECT status, attempts, lease_until FROM recipients").all();
    expect(rows()).toEqual([{ status: "queued", attempts: 0, lease_until: null }]);
    // the abandoned transaction answers later: given up, it is not recorded (the next start sends it again)
    await Bun.sleep(2_500);
    expect(rows()).toEqual([{ status: "queued", attempts: 0, lease_until: null }]);
  });

  test("jobs that wait in memory for half a lease go back to the queue in their place and are claimed afresh, each sent once", async () => {
    const release = spyOn(QueueClaimer.prototype, "putBack");
    try {
      const e = setup(`[delivery]\nper_destination_connections = 1\n`, { leaseMs: 4_000 });
      e.transport.sendDelayMs = 400; // one connection, 12 messages: the last ones wait past half the lease
      for (let i = 0; i < 12; i++) await enqueue(e, [`x${i}@a.test`]);
      e.loop.start();
      await waitFor(() => pendingCount(e) === 0, 15_000, "delivery");
      const handedBack = release.mock.calls.flatMap(([rows]) => rows);
      expect(handedBack.length).toBeGreaterThan(0);
      expect(e.transport.sent.map((s) => s.msg.recipients[0]!.address)).toEqual(Array.from({ length: 12 }, (_, i) => `x${i}@a.test`));
      const attempts = e.store.sqlite.query("SELECT DISTINCT attempts FROM recipients").all();
      expect(attempts).toEqual([{ attempts: 1 }]);
    } finally {
      release.mockRestore();
    }
  }, 20_000);

  test("a due retry at a busy destination goes next, not behind the new mail already waiting there", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 1\nretry = ["1s"]\n`, { backlogPerDestination: 100 });
    e.transport.sendDelayMs = 10;
    const plain = e.transport.behaviour;
    let greylisted = false;
    e.transport.behaviour = (m) => {
      if (m.recipients[0]!.address !== "late@a.test" || greylisted) return plain(m);
      greylisted = true;
      return [{ recipientId: m.recipients[0]!.id, outcome: "deferred", code: 451, enhanced: "4.7.1", reply: "Greylisted, try again later" }];
    };
    // how many transactions had been sent each time the retry was claimed
    const claimedAfter: number[] = [];
    const claim = QueueClaimer.prototype.claim;
    const spy = spyOn(QueueClaimer.prototype, "claim").mockImplementation(function (this: QueueClaimer, ...args) {
      const rows = claim.apply(this, args);
      if (rows.some((r) => r.address === "late@a.test")) claimedAfter.push(e.transport.sent.length);
      return rows;
    });
    try {
      e.loop.start();
      await enqueue(e, ["late@a.test"]);
      await waitFor(() => statuses(e)["late@a.test"] === "deferred", 5000, "the first attempt");
      // new mail for the same destination, far more than it sends before the retry is due
      await Promise.all(Array.from({ length: 400 }, (_, i) => enqueue(e, [`new${i}@a.test`])));
      await waitFor(() => statuses(e)["late@a.test"] === "delivered", 15_000, "the retry");
      const sent = e.transport.sent.map((s) => s.msg.recipients[0]!.address);
      const retriedAt = sent.lastIndexOf("late@a.test");
      // at most the one transaction under way when it was claimed went first
      expect(sent.slice(claimedAfter.at(-1), retriedAt).length).toBeLessThanOrEqual(1);
      expect(pendingCount(e)).toBeGreaterThan(0); // new mail was still waiting: the retry did not just come last
    } finally {
      spy.mockRestore();
    }
  }, 20_000);

  test("a message whose personalization fails is deferred unsent, and the connection goes on with the next", async () => {
    const e = setup("", {}, {
      personalize: async (msg, rs) => {
        if (msg.body.includes("poison")) throw new Error("HTMLRewriter exploded");
        return [{ messageId: msg.id, envelopeFrom: msg.envelopeFrom, recipients: rs.map((r) => ({ id: r.id, address: r.address })), body: msg.body }];
      },
    });
    const poison = await e.enqueuer.enqueue({
      userId: null, envelopeFrom: "sender@example.com", recipients: ["p@a.test"], suppressed: new Set(), body: Buffer.from("Subject: poison\r\n\r\nx\r\n"),
      subject: "poison", source: "api", options: { inlineCss: false, trackClicks: true, trackOpens: false, trackBounces: false, unsubscribe: false },
    });
    await enqueue(e, ["ok@a.test"]);
    e.loop.start();
    await waitFor(() => pendingCount(e) === 1 && statuses(e)["ok@a.test"] === "delivered", 5000, "the good one delivered");
    expect(statuses(e)["p@a.test"]).toBe("deferred");
    const reply = e.store.sqlite.query("SELECT last_reply FROM recipients WHERE address = 'p@a.test'").get() as { last_reply: string };
    expect(reply.last_reply).toContain("personalizing the message failed: HTMLRewriter exploded");
    expect(e.transport.sent.map((s) => s.msg.recipients[0]!.address)).toEqual(["ok@a.test"]);
    expect(e.logged.filter((l) => l.event === "personalize_failed")).toMatchObject([{ level: "error", queue_id: poison.id, recipients: 1 }]);
    expect(e.loop.throttle.snapshot().destinations.filter((d) => d.dead || d.backoffUntil)).toEqual([]);
  });

  test("a store error while loading a message to send hands the job back and logs it: the mail goes later, once", async () => {
    const load = spyOn(QueueClaimer.prototype, "loadMessage");
    load.mockImplementationOnce(() => {
      throw Object.assign(new Error("disk I/O error"), { code: "SQLITE_IOERR" });
    });
    try {
      const e = setup("", { storeRetryMs: 300 });
      e.loop.start();
      const m = await enqueue(e, ["x@a.test"]);
      await waitFor(() => statuses(e)["x@a.test"] === "delivered", 5000, "delivery after the store error");
      expect(e.transport.sent.length).toBe(1);
      expect(e.logged.filter((l) => l.event === "delivery_load_failed")).toMatchObject([
        { level: "error", queue_id: m.id, recipients: 1, error: { message: "disk I/O error" } },
      ]);
      await e.loop.stop();
      expect(pendingCount(e)).toBe(0);
    } finally {
      load.mockRestore();
    }
  });

  test("deliveries whose settles cannot be committed (disk full) are recorded once the store recovers, each sent once", async () => {
    let full = true;
    const diskFull = () => Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" });
    // the disk is full for the settles' commits and for lease extensions; claims (updates in place) still go through
    const extend = spyOn(QueueClaimer.prototype, "extend").mockImplementation(() => {
      throw diskFull();
    });
    const claim = spyOn(QueueClaimer.prototype, "claim");
    try {
      const e = setup(`[delivery]\nper_destination_connections = 2\n`, { leaseMs: 1_000, storeRetryMs: 200 }, {
        batch: (run) => (fn) => run(() => {
          fn();
          if (full) throw diskFull(); // rolls the transaction back, as a failing commit does
        }),
      });
      e.loop.start();
      for (let i = 0; i < 10; i++) await enqueue(e, [`x${i}@a.test`, `y${i}@b.test`]);
      await waitFor(() => e.transport.sent.length >= 20, 5000, "every message sent");
      // the leases run out under the full disk and every row is claimed a second time
      const claimedTwice = () => {
        const times = new Map<string, number>();
        for (const r of claim.mock.results) if (r.type === "return") for (const row of r.value) times.set(row.id, (times.get(row.id) ?? 0) + 1);
        return [...times.values()].filter((n) => n >= 2).length;
      };
      await waitFor(() => claimedTwice() === 20, 10_000, "the expired leases claimed again");
      expect(pendingCount(e)).toBe(20);
      full = false;
      await waitFor(() => pendingCount(e) === 0, 5000, "the deliveries recorded");
      expect(Object.values(statuses(e))).toEqual(Array(20).fill("delivered"));
      const sends = new Map<string, number>();
      for (const s of e.transport.sent) for (const r of s.msg.recipients) sends.set(r.address, (sends.get(r.address) ?? 0) + 1);
      expect(Object.fromEntries(sends)).toEqual(Object.fromEntries([...Array(10).keys()].flatMap((i) => [[`x${i}@a.test`, 1], [`y${i}@b.test`, 1]])));
      expect(e.logged.filter((l) => l.event === "delivery_unrecorded").length).toBeGreaterThan(0);
    } finally {
      extend.mockRestore();
      claim.mockRestore();
    }
  }, 20_000);

  test("stop with deliveries still unrecorded keeps trying until the deadline, then logs each one, leases kept", async () => {
    const e = setup("", { storeRetryMs: 100 }, {
      batch: () => () => {
        throw Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" });
      },
    });
    e.loop.start();
    const m = await enqueue(e, ["x@a.test", "y@a.test"]);
    await waitFor(() => e.logged.some((l) => l.event === "delivery_unrecorded"), 5000, "the failed settle");
    const retriesBefore = e.logged.filter((l) => l.event === "delivery_unrecorded_retry_failed").length;
    await e.loop.stop(Date.now() + 600);
    expect(e.logged.filter((l) => l.event === "delivery_unrecorded_retry_failed").length).toBeGreaterThan(retriesBefore);
    const lost = e.logged.filter((l) => l.event === "delivery_not_recorded");
    expect(lost.map((l) => l.recipient).sort()).toEqual(["x@a.test", "y@a.test"]);
    expect(lost[0]).toMatchObject({ level: "error", queue_id: m.id, reply: "ok" });
    expect(String(lost[0]!.detail)).toContain("delivered but not recorded");
    // handing them back would send them again at once; the next start does (at least once)
    const leased = e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get() as { n: number };
    expect(leased.n).toBe(2);
    expect(e.transport.sent.length).toBe(1);
  });

  test("keeps at most `window` recipients leased at once", async () => {
    const e = setup(`[delivery]\nper_destination_connections = 1\n`, { window: 5 });
    e.transport.sendDelayMs = 30;
    for (let i = 0; i < 30; i++) await enqueue(e, [`x${i}@a.test`]);
    e.loop.start();
    let maxLeased = 0;
    await waitFor(() => {
      const n = (e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get() as { n: number }).n;
      maxLeased = Math.max(maxLeased, n);
      return pendingCount(e) === 0;
    }, 10_000, "delivery");
    expect(maxLeased).toBeGreaterThan(0);
    expect(maxLeased).toBeLessThanOrEqual(5);
  });
});

describe("signalOf", () => {
  const r = (code: number, enhanced: string, reply: string): RecipientResult => ({
    recipientId: "r1" as never, outcome: code < 300 ? "delivered" : code < 500 ? "deferred" : "bounced", code, enhanced, reply,
  });
  test("a 421 or a 4.7.x rate reply is a throttle signal", () => {
    expect(signalOf([r(421, "4.7.0", "closing")])).toBe("throttle");
    expect(signalOf([r(250, "2.0.0", "ok"), r(450, "4.7.1", "too many messages, slow down")])).toBe("throttle");
  });
  test("a bounce or a mailbox-level deferral is a normal conversation", () => {
    expect(signalOf([r(550, "5.1.1", "no such user")])).toBe("ok");
    expect(signalOf([r(452, "4.2.2", "mailbox full")])).toBe("ok");
  });
  test("no reply at all is a failure", () => {
    expect(signalOf([r(0, "4.4.1", "connection lost")])).toBe("failure");
  });
});

describe("expiry at destinations held back as failing", () => {
  const DAY = 24 * 3600_000;
  const attemptsCounted = async (e: Env, result: string) => {
    const m = new RegExp(`^outpost_delivery_attempts_total\\{result="${result}"\\} (\\d+)`, "m").exec(await e.metrics.render());
    return Number(m?.[1] ?? 0);
  };
  const atA = (e: Env) => e.store.sqlite.query(
    `SELECT sum(status IN ('queued','deferred')) AS pending, sum(status = 'bounced') AS bounced,
       sum(status = 'bounced' AND last_status = '4.4.7' AND last_reply LIKE 'message expired after 2d in the queue; last reply: connect ECONNREFUSED%') AS expired
     FROM recipients WHERE domain LIKE 'a%'`,
  ).get() as { pending: number; bounced: number; expired: number };

  test("a dead destination's 1,000 recipients past max_queue_time are bounced as expired without connecting again, one DSN per message; younger mail stays queued", async () => {
    let offset = pastEveryId() - Date.now();
    const now = () => Date.now() + offset;
    const e = setup(`[delivery]\nmax_queue_time = "1d"\nper_destination_connections = 5\n`, {}, { now });
    e.transport.refuse.add("mx-a");
    for (let i = 0; i < 100; i++) await enqueue(e, Array.from({ length: 10 }, (_, j) => `x${i}@a${j}.test`));
    offset += 2 * DAY;
    for (let i = 0; i < 5; i++) await enqueue(e, [`young${i}@a.test`]);
    const looks = spyOn(QueueClaimer.prototype, "claimExpired");
    try {
      e.loop.start();
      await waitFor(() => atA(e).bounced === 1_000, 10_000, "every old recipient at a*.test bounced");
      expect(atA(e)).toEqual({ pending: 5, bounced: 1_000, expired: 1_000 });
      expect(statuses(e)["young0@a.test"]).toBe("queued");
      expect(e.dsns.length).toBe(100);
      expect(await attemptsCounted(e, "expired")).toBe(1_000);
      // a few connections found it dead; none after, and a handful of looks (500 recipients each) did the rest
      expect(e.transport.connects).toBeLessThanOrEqual(5 + 3);
      expect(looks.mock.calls.length).toBeLessThanOrEqual(6);
      expect(e.logged.some((l) => l.event === "delivery_expired_destination" && l.destination === "mx-a")).toBe(true);
    } finally {
      looks.mockRestore();
    }
  });

  test("a destination held back only for its rate keeps its mail past max_queue_time queued", async () => {
    let offset = pastEveryId() - Date.now();
    const now = () => Date.now() + offset;
    const e = setup(`[delivery]\nmax_queue_time = "1d"\n[delivery.destination."a.test"]\nrate = "1/min"\n`, { leaseMs: 120_000 }, { now });
    for (let i = 0; i < 20; i++) await enqueue(e, [`x${i}@a.test`]);
    offset += 2 * DAY;
    e.loop.start();
    const leased = () => (e.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get() as { n: number }).n;
    await waitFor(() => e.transport.sent.length === 1 && leased() === 0, 5000, "one message sent, the rest back in the queue");
    expect(e.logged.some((l) => l.event === "delivery_destination_held_back" && l.reason === "rate")).toBe(true);
    expect(pendingCount(e)).toBe(19);
    expect(await attemptsCounted(e, "expired")).toBe(0);
    expect(e.dsns.length).toBe(0);
  });
});
