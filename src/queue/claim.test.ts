import { afterEach, beforeEach, describe, expect, test } from "bun:test";
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
