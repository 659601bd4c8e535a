import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer, type MessageOptions } from "./enqueue.ts";

const OFF: MessageOptions = { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false };

let dir: ReturnType<typeof tempDir>;
let store: Store;
let clock: number;
let enqueuer: Enqueuer;
let claimer: QueueClaimer;

beforeEach(() => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  clock = 1_000_000;
  enqueuer = new Enqueuer(store.sqlite, new EventRecorder(store.sqlite), () => clock);
  claimer = new QueueClaimer(store.sqlite, () => clock);
});

afterEach(() => {
  store.close();
  dir.cleanup();
});

async function enqueue(recipients: string[], from = "sender@example.org") {
  return enqueuer.enqueue({
    userId: null,
    envelopeFrom: from,
    recipients,
    suppressed: new Set(),
    body: Buffer.from("Subject: hi\r\n\r\nhello\r\n"),
    subject: "hi",
    source: "smtp",
    options: OFF,
  });
}

describe("claiming due recipients", () => {
  test("two claims never return the same recipient while its lease holds", async () => {
    await enqueue(["a@one.test", "b@one.test", "c@two.test"]);
    const first = claimer.claim(2, 60_000);
    const second = claimer.claim(10, 60_000);
    expect(first).toHaveLength(2);
    expect(second).toHaveLength(1);
    const ids = [...first, ...second].map((r) => r.id);
    expect(new Set(ids).size).toBe(3);
    expect(claimer.claim(10, 60_000)).toEqual([]);
  });

  test("a lease that ran out (the process died) makes the recipient claimable again", async () => {
    await enqueue(["a@one.test"]);
    const [first] = claimer.claim(1, 30_000);
    clock += 29_999;
    expect(claimer.claim(1, 30_000)).toEqual([]);
    clock += 1;
    const [again] = claimer.claim(1, 30_000);
    expect(again?.id).toBe(first!.id);
  });

  test("recipients in excluded domains are left for later", async () => {
    await enqueue(["a@busy.test", "b@busy.test", "c@free.test"]);
    const got = claimer.claim(10, 60_000, new Set(["busy.test"]));
    expect(got.map((r) => r.address)).toEqual(["c@free.test"]);
    expect(claimer.claim(10, 60_000).map((r) => r.domain)).toEqual(["busy.test", "busy.test"]);
  });

  test("claims return the oldest due recipients first and skip those not yet due", async () => {
    await enqueue(["early@x.test"]);
    clock += 10;
    await enqueue(["late@x.test"]);
    store.sqlite.run("UPDATE recipients SET next_attempt_at = ? WHERE address = 'late@x.test'", [clock + 5_000]);
    expect(claimer.claim(10, 60_000).map((r) => r.address)).toEqual(["early@x.test"]);
    clock += 5_000;
    expect(claimer.claim(10, 60_000).map((r) => r.address)).toEqual(["late@x.test"]);
  });

  test("release gives a lease back without counting an attempt", async () => {
    await enqueue(["a@one.test"]);
    const [r] = claimer.claim(1, 60_000);
    claimer.release([r!.id], clock + 500);
    expect(claimer.claim(1, 60_000)).toEqual([]);
    clock += 500;
    const [again] = claimer.claim(1, 60_000);
    expect(again?.id).toBe(r!.id);
    expect(again?.attempts).toBe(0);
  });

  test("release without a time makes the recipient due at once", async () => {
    await enqueue(["a@one.test"]);
    const [r] = claimer.claim(1, 60_000);
    claimer.release([r!.id]);
    expect(claimer.claim(1, 60_000).map((x) => x.id)).toEqual([r!.id]);
  });

  test("release of a recipient that was settled meanwhile changes nothing", async () => {
    await enqueue(["a@one.test"]);
    const [r] = claimer.claim(1, 60_000);
    store.sqlite.run("UPDATE recipients SET status = 'delivered', lease_until = NULL WHERE id = ?", [r!.id]);
    claimer.release([r!.id]);
    const row = store.sqlite.query("SELECT status FROM recipients WHERE id = ?").get(r!.id) as { status: string };
    expect(row.status).toBe("delivered");
  });

  test("suppressed recipients are never claimed", async () => {
    await enqueuer.enqueue({
      userId: null, envelopeFrom: "s@example.org", recipients: ["gone@x.test", "ok@x.test"],
      suppressed: new Set(["gone@x.test"]), body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "api", options: OFF,
    });
    expect(claimer.claim(10, 1_000).map((r) => r.address)).toEqual(["ok@x.test"]);
  });
});

describe("next due time", () => {
  test("is null for an empty queue", () => {
    expect(claimer.nextDueAt()).toBeNull();
  });

  test("is the earliest next attempt, including when a lease will run out", async () => {
    await enqueue(["a@one.test", "b@one.test"]);
    expect(claimer.nextDueAt()).toBe(clock);
    claimer.claim(2, 45_000);
    expect(claimer.nextDueAt()).toBe(clock + 45_000);
  });
});

describe("loading a message", () => {
  test("returns its body, sender, time and options", async () => {
    const m = await enqueue(["a@one.test"], "from@example.org");
    const loaded = claimer.loadMessage(m.id);
    expect(loaded?.envelopeFrom).toBe("from@example.org");
    expect(loaded?.createdAt).toBe(clock);
    expect(loaded?.body.toString()).toContain("hello");
    expect(loaded?.options).toEqual(OFF);
  });

  test("returns null for an unknown id", () => {
    expect(claimer.loadMessage("nope" as never)).toBeNull();
  });
});

describe("query plans", () => {
  const plan = (sql: string, params: Record<string, unknown>) =>
    (store.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all(params as never) as { detail: string }[]).map((r) => r.detail);
  /** The exact SQL QueueClaimer prepared (a bun:sqlite Statement's toString() is its SQL). */
  const sqlOf = (name: string) => String((claimer as unknown as Record<string, unknown>)[name]);
  const params = { now: 1, limit: 10, scan: 100, exclude: "[]" };

  test("claiming searches the recipients_due index by time and never scans the recipients table", () => {
    for (const name of ["selectDue", "selectDueExcluding"]) {
      const p = plan(sqlOf(name), params);
      expect(p).toContain("SEARCH recipients USING INDEX recipients_due (next_attempt_at<?)");
      expect(p.filter((d) => d.startsWith("SCAN recipients"))).toEqual([]);
    }
  });

  test("the next due time is read from the first entry of recipients_due", () => {
    expect(plan(sqlOf("nextDue"), {})).toEqual(["SCAN recipients USING INDEX recipients_due"]);
    expect(sqlOf("nextDue")).toContain("LIMIT 1");
  });
});

describe("a queue of a million recipients", () => {
  let big: Store;
  let bigDir: ReturnType<typeof tempDir>;

  beforeAll(() => {
    bigDir = tempDir();
    big = openStore(join(bigDir.path, "outpost.db"));
    big.sqlite.run("INSERT INTO messages (id, created_at, envelope_from, size, body, source) VALUES ('m1', 0, 's@x.test', 1, x'00', 'smtp')");
    // 1,000,000 recipients over 1000 domains; every 10th already delivered (outside the partial index)
    big.sqlite.run(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999)
      INSERT INTO recipients (id, message_id, address, domain, status, attempts, next_attempt_at, updated_at)
      SELECT 'r' || i, 'm1', 'u' || i || '@d' || (i % 1000) || '.test', 'd' || (i % 1000) || '.test',
        CASE WHEN i % 10 = 0 THEN 'delivered' WHEN i % 3 = 0 THEN 'deferred' ELSE 'queued' END, 0, i * 10, 0 FROM n`);
    big.sqlite.run("ANALYZE"); // real statistics, so the planner chooses as it would in production
  }, 60_000);

  afterAll(() => {
    big.close();
    bigDir.cleanup();
  });

  test("claim is still a search of recipients_due, never a scan of the table", () => {
    const c = new QueueClaimer(big.sqlite, () => 5_000_000);
    for (const name of ["selectDue", "selectDueExcluding"]) {
      const sql = String((c as unknown as Record<string, unknown>)[name]);
      const plan = (big.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all({ now: 1, limit: 10, scan: 100, exclude: "[]" } as never) as { detail: string }[]).map((r) => r.detail);
      expect(plan).toContain("SEARCH recipients USING INDEX recipients_due (next_attempt_at<?)");
      expect(plan.filter((d) => d.startsWith("SCAN recipients"))).toEqual([]);
    }
  });

  test("claim returns the oldest due pending recipients and honours excluded domains", () => {
    const c = new QueueClaimer(big.sqlite, () => 5_000_000);
    const got = c.claim(100, 60_000);
    expect(got).toHaveLength(100);
    // i = 1..111 minus every 10th (delivered): the first 100 pending rows in next_attempt_at order
    expect(String(got[0]!.id)).toBe("r1");
    expect(got.some((r) => Number(r.id.slice(1)) % 10 === 0)).toBe(false);
    const excluded = c.claim(100, 60_000, new Set(["d1.test", "d2.test"]));
    expect(excluded).toHaveLength(100);
    expect(excluded.some((r) => r.domain === "d1.test" || r.domain === "d2.test")).toBe(false);
    expect(c.nextDueAt()).not.toBeNull();
  });
});
