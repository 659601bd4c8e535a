import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { OPTIONS_OFF, tempDir } from "../../test/helpers/harness.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer } from "./enqueue.ts";


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
    options: OPTIONS_OFF,
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

  test("extend keeps a lease from running out, and leaves settled rows alone", async () => {
    await enqueue(["a@one.test", "b@one.test"]);
    const [a, b] = claimer.claim(2, 30_000);
    store.sqlite.run("UPDATE recipients SET status = 'delivered', lease_until = NULL WHERE id = ?", [b!.id]);
    clock += 29_000;
    claimer.extend([a!.id, b!.id], 30_000);
    clock += 29_000; // past the first lease, within the extended one
    expect(claimer.claim(10, 30_000)).toEqual([]);
    const rows = store.sqlite.query("SELECT address, status, lease_until FROM recipients ORDER BY address").all();
    expect(rows).toEqual([
      { address: "a@one.test", status: "queued", lease_until: clock - 29_000 + 30_000 },
      { address: "b@one.test", status: "delivered", lease_until: null },
    ]);
    clock += 1_000;
    expect(claimer.claim(10, 30_000).map((r) => r.id)).toEqual([a!.id]);
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
      suppressed: new Set(["gone@x.test"]), body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "api", options: OPTIONS_OFF,
    });
    expect(claimer.claim(10, 1_000).map((r) => r.address)).toEqual(["ok@x.test"]);
  });

  test("a released first attempt stays queued and a released retry stays deferred", async () => {
    await enqueue(["new@x.test", "old@x.test"]);
    defer(["old@x.test"], clock);
    const got = claimer.claim(10, 60_000);
    expect(got).toHaveLength(2);
    claimer.release(got.map((r) => r.id));
    expect(statusOf("new@x.test")).toBe("queued");
    expect(statusOf("old@x.test")).toBe("deferred");
  });
});

/** Turns recipients into retries (one failed attempt) due at `at`, as a deferral by queue/settle.ts would. */
function defer(addresses: string[], at: number) {
  const q = store.sqlite.query("UPDATE recipients SET status = 'deferred', attempts = 1, next_attempt_at = ? WHERE address = ?");
  store.sqlite.transaction(() => {
    for (const a of addresses) q.run(at, a);
  })();
}

function statusOf(address: string): string {
  return (store.sqlite.query("SELECT status FROM recipients WHERE address = ?").get(address) as { status: string }).status;
}

const addresses = (n: number, prefix: string, domain = "x.test") => Array.from({ length: n }, (_, i) => `${prefix}${i}@${domain}`);

describe("fairness between new mail and retries", () => {
  test("a backlog of 5,000 retries due earlier does not hold back 10 new recipients", async () => {
    const backlog = addresses(5_000, "old");
    await enqueue(backlog);
    defer(backlog, clock - 3_600_000);
    clock += 10;
    await enqueue(addresses(10, "new"));
    const got = claimer.claim(100, 60_000);
    expect(got).toHaveLength(100);
    expect(got.filter((r) => r.address.startsWith("new")).map((r) => r.address).sort()).toEqual(addresses(10, "new").sort());
    // the rest of the claim goes to the retries, oldest first
    expect(got.filter((r) => r.attempts === 1)).toHaveLength(90);
  }, 20_000); // enqueueing 5,000 recipients takes 2 s alone, more than the default 5 s on a busy machine

  test("a flood of new mail does not hold back retries that are due", async () => {
    await enqueue(addresses(10, "old"));
    defer(addresses(10, "old"), clock + 1);
    await enqueue(addresses(1_000, "new"));
    clock += 1;
    const got = claimer.claim(100, 60_000);
    expect(got.filter((r) => r.address.startsWith("old"))).toHaveLength(10);
    expect(got.filter((r) => r.address.startsWith("new"))).toHaveLength(90);
  });

  test("with both sides busy a claim takes half from each, and the odd one alternates", async () => {
    await enqueue(addresses(50, "new"));
    await enqueue(addresses(50, "old"));
    defer(addresses(50, "old"), clock);
    const count = (rs: { attempts: number }[]) => [rs.filter((r) => r.attempts === 0).length, rs.filter((r) => r.attempts === 1).length];
    expect(count(claimer.claim(10, 60_000))).toEqual([5, 5]);
    expect(count(claimer.claim(1, 60_000))).toEqual([1, 0]);
    expect(count(claimer.claim(1, 60_000))).toEqual([0, 1]);
    expect(count(claimer.claim(3, 60_000))).toEqual([2, 1]);
    expect(count(claimer.claim(3, 60_000))).toEqual([1, 2]);
  });

  test("excluded domains are left out on both sides, and each side fills from the other", async () => {
    await enqueue([...addresses(5, "new", "busy.test"), ...addresses(2, "new", "free.test")]);
    await enqueue([...addresses(5, "old", "busy.test"), ...addresses(8, "old", "free.test")]);
    defer([...addresses(5, "old", "busy.test"), ...addresses(8, "old", "free.test")], clock);
    const got = claimer.claim(10, 60_000, new Set(["busy.test"]));
    expect(got.every((r) => r.domain === "free.test")).toBe(true);
    expect(got.filter((r) => r.attempts === 0)).toHaveLength(2);
    expect(got.filter((r) => r.attempts === 1)).toHaveLength(8);
  });
});

describe("exclusions per side, and putting work back in its place", () => {
  test("a domain left out of first attempts only still gives its due retries", async () => {
    await enqueue([...addresses(5, "new", "slow.test"), ...addresses(2, "new", "free.test")]);
    await enqueue(addresses(3, "old", "slow.test"));
    defer(addresses(3, "old", "slow.test"), clock);
    const got = claimer.claim(10, 60_000, { fresh: new Set(["slow.test"]), retry: new Set() });
    expect(got.filter((r) => r.domain === "slow.test").map((r) => r.address).sort()).toEqual(addresses(3, "old", "slow.test").sort());
    expect(got.filter((r) => r.attempts === 0).map((r) => r.domain)).toEqual(["free.test", "free.test"]);
    expect(claimer.claim(10, 60_000, { fresh: new Set(), retry: new Set(["slow.test"]) }).map((r) => r.domain)).toEqual(Array(5).fill("slow.test"));
  });

  test("work put back is due when it was due before its claim, ahead of work that came due meanwhile", async () => {
    await enqueue(["first@x.test"]);
    const [first] = claimer.claim(1, 60_000);
    expect(first!.dueAt).toBe(clock);
    clock += 5_000;
    await enqueue(["second@x.test"]);
    clock += 5_000;
    claimer.putBack([first!]);
    expect(claimer.claim(2, 60_000).map((r) => r.address)).toEqual(["first@x.test", "second@x.test"]);
    const attempts = store.sqlite.query("SELECT DISTINCT attempts FROM recipients").all();
    expect(attempts).toEqual([{ attempts: 0 }]);
  });
});

describe("a claim's commit", () => {
  test("does not wait for the disk, and the commits after it do again", async () => {
    await enqueue(["a@one.test"]);
    const level = () => store.sqlite.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous;
    // the claim reads its clock inside its transaction: the level its commit will have (1 NORMAL, 2 FULL)
    const levels: number[] = [];
    const lazy = new QueueClaimer(store.sqlite, () => (levels.push(level()), clock));
    expect(lazy.claim(1, 60_000)).toHaveLength(1);
    expect(levels).toEqual([1]);
    expect(level()).toBe(2);
  });

  test("lost to a power cut, leaves its recipients deliverable after a restart", async () => {
    const stored = await enqueue(["a@one.test", "b@two.test"]);
    // the disk as a power cut would leave it if the claim's commit never reached it: the store before the claim
    store.sqlite.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    const restarted = join(dir.path, "after-power-cut.db");
    copyFileSync(join(dir.path, "outpost.db"), restarted);
    expect(claimer.claim(10, 60_000)).toHaveLength(2);
    store.close();
    store = openStore(restarted);
    const again = new QueueClaimer(store.sqlite, () => clock);
    again.recoverLeases();
    expect(again.claim(10, 60_000).map((r) => r.id).sort()).toEqual(stored.recipients.map((r) => r.id).sort());
  });
});

describe("recovering leases at start", () => {
  test("makes every leased recipient due at once and counts them", async () => {
    await enqueue(["a@one.test", "b@one.test", "c@two.test"]);
    defer(["c@two.test"], clock);
    const leased = claimer.claim(3, 20_000);
    expect(claimer.claim(3, 20_000)).toEqual([]);
    // a new process (same clock) starts on the database the dead one left
    const restarted = new QueueClaimer(store.sqlite, () => clock);
    expect(restarted.recoverLeases()).toBe(3);
    expect(restarted.nextDueAt()).toBe(clock);
    const again = restarted.claim(10, 20_000);
    expect(again.map((r) => r.id).sort()).toEqual(leased.map((r) => r.id).sort());
    expect(again.map((r) => r.attempts).sort()).toEqual([0, 0, 1]);
    expect(statusOf("c@two.test")).toBe("deferred");
  });

  test("leaves alone recipients that are not leased, whose lease ran out, or that are settled", async () => {
    await enqueue(["wait@x.test", "expired@x.test", "done@x.test"]);
    defer(["wait@x.test"], clock + 60_000);
    const [expired] = claimer.claim(2, 1_000); // expired@ and done@ (wait@ is not due)
    store.sqlite.run("UPDATE recipients SET status = 'delivered', lease_until = NULL WHERE address = 'done@x.test'");
    clock += 1_000;
    expect(claimer.recoverLeases()).toBe(0);
    const row = (a: string) => store.sqlite.query("SELECT next_attempt_at AS at, lease_until AS lease FROM recipients WHERE address = ?").get(a);
    expect(row("wait@x.test")).toEqual({ at: clock - 1_000 + 60_000, lease: null });
    expect(row(expired!.address)).toEqual({ at: clock, lease: clock });
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

  test("is the earlier of the first queued and the first deferred recipient, whichever state that is", async () => {
    await enqueue(["retry@x.test", "new@x.test"]);
    store.sqlite.run("UPDATE recipients SET next_attempt_at = ? WHERE address = 'new@x.test'", [clock + 20_000]);
    defer(["retry@x.test"], clock + 10_000);
    expect(claimer.nextDueAt()).toBe(clock + 10_000);
    defer(["retry@x.test"], clock + 30_000);
    expect(claimer.nextDueAt()).toBe(clock + 20_000);
  });
});

describe("loading a message", () => {
  test("returns its body, sender, time and options", async () => {
    const m = await enqueue(["a@one.test"], "from@example.org");
    const loaded = claimer.loadMessage(m.id);
    expect(loaded?.envelopeFrom).toBe("from@example.org");
    expect(loaded?.createdAt).toBe(clock);
    expect(loaded?.body.toString()).toContain("hello");
    expect(loaded?.options).toEqual(OPTIONS_OFF);
  });

  test("returns null for an unknown id", () => {
    expect(claimer.loadMessage("nope" as never)).toBeNull();
  });
});

describe("a backlog of excluded rows larger than the scan window", () => {
  async function backlog(n: number) {
    for (let i = 0; i < n; i += 50) await enqueue(Array.from({ length: Math.min(50, n - i) }, (_, j) => `u${i + j}@big.test`));
  }

  test("does not hold up other domains: the claim goes on past it, domain by domain", async () => {
    const c = new QueueClaimer(store.sqlite, () => clock, { scanWindow: 100 });
    await backlog(150);
    clock += 1;
    await enqueue(["reset@small.test", "x@other.test"]);
    const got = c.claim(10, 60_000, new Set(["big.test"]));
    expect(got.map((r) => r.address).sort()).toEqual(["reset@small.test", "x@other.test"]);
    // without the exclusion the oldest rows come first, as always
    expect(c.claim(3, 60_000).map((r) => r.domain)).toEqual(["big.test", "big.test", "big.test"]);
  });

  test("serves the other domains round-robin from where the last such claim stopped", async () => {
    const c = new QueueClaimer(store.sqlite, () => clock, { scanWindow: 100 });
    await backlog(150);
    clock += 1;
    for (const d of ["a", "b", "c", "d"]) await enqueue([`1@${d}.test`, `2@${d}.test`, `3@${d}.test`]);
    const first = c.claim(2, 60_000, new Set(["big.test"])).map((r) => r.domain);
    expect(first).toEqual(["a.test", "a.test"]);
    // the cursor stands at a.test: the next claim starts after it
    const second = c.claim(4, 60_000, new Set(["big.test"])).map((r) => r.domain);
    expect(second).toEqual(["b.test", "b.test", "b.test", "c.test"]);
    // from after c.test, round to the start, and back up to c.test: every due row is taken once
    const rest = c.claim(100, 60_000, new Set(["big.test"])).map((r) => r.address);
    expect(rest).toEqual(["1@d.test", "2@d.test", "3@d.test", "3@a.test", "2@c.test", "3@c.test"]);
  });
});

describe("a metered destination (a slow rate)", () => {
  test("gives a claim at most 50 of its due rows per side, read by domain, and the others fill the rest", async () => {
    for (let i = 0; i < 500; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `u${i + j}@slow.test`));
    store.sqlite.run("UPDATE recipients SET status = 'deferred' WHERE rowid % 2 = 0");
    clock += 1;
    await enqueue(Array.from({ length: 30 }, (_, j) => `n${j}@fast.test`));
    const metered = { fresh: new Set<string>(), retry: new Set<string>(), metered: new Set(["slow.test"]) };
    const got = claimer.claim(400, 60_000, metered);
    const leased = () => store.sqlite.query(
      "SELECT status, count(*) AS n FROM recipients WHERE domain = 'slow.test' AND lease_until IS NOT NULL GROUP BY status ORDER BY status",
    ).all();
    // 500 slow rows are older and due, yet the claim takes 50 of each side, and every fast row
    expect(got.filter((r) => r.domain === "fast.test").length).toBe(30);
    expect(leased()).toEqual([{ status: "deferred", n: 50 }, { status: "queued", n: 50 }]);
    // a side that leaves the domain out gets none of it, however metered
    const retryOnly = claimer.claim(400, 60_000, { ...metered, fresh: new Set(["slow.test"]) });
    expect(retryOnly.length).toBe(50);
    expect(leased()).toEqual([{ status: "deferred", n: 100 }, { status: "queued", n: 50 }]);
  });
});

describe("a dead destination's backlog in front of the queue", () => {
  test("a healthy domain behind it gets all its due mail in one claim, not a few rows per round", async () => {
    for (let i = 0; i < 1_000; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `u${i + j}@dead.test`));
    clock += 1;
    for (let i = 0; i < 150; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `n${i + j}@healthy.test`));
    const c = new QueueClaimer(store.sqlite, () => clock, { scanWindow: 100 });
    const got = c.claim(300, 60_000, new Set(["dead.test"]));
    expect(got.map((r) => r.domain)).toEqual(Array.from({ length: 150 }, () => "healthy.test"));
    expect(new Set(got.map((r) => r.id)).size).toBe(150);
  });

  test("a retry for a healthy domain that comes due behind it is claimed at the next claim", async () => {
    for (let i = 0; i < 1_000; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `u${i + j}@dead.test`));
    store.sqlite.run("UPDATE recipients SET status = 'deferred'");
    const later = await enqueue(["r@healthy.test"]);
    store.sqlite.run("UPDATE recipients SET status = 'deferred', next_attempt_at = ? WHERE message_id = ?", [clock + 60_000, later.id]);
    expect(claimer.claim(10, 60_000, new Set(["dead.test"]))).toEqual([]);
    clock += 60_000;
    expect(claimer.claim(10, 60_000, new Set(["dead.test"])).map((r) => r.address)).toEqual(["r@healthy.test"]);
  });
});

describe("a backlog of excluded rows larger than the scan window, with retries due too", () => {
  test("new mail for other domains still gets its half of the claim: retries do not fill it", async () => {
    const c = new QueueClaimer(store.sqlite, () => clock, { scanWindow: 100 });
    for (let i = 0; i < 150; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `u${i + j}@big.test`));
    const retries = await enqueue(Array.from({ length: 40 }, (_, i) => `r${i}@retry${i}.test`));
    store.sqlite.run(`UPDATE recipients SET status = 'deferred' WHERE message_id = ?`, [retries.id]);
    clock += 1;
    await enqueue(["new@small.test"]);
    const got = c.claim(10, 60_000, new Set(["big.test"])).map((r) => r.address);
    expect(got).toContain("new@small.test");
    expect(got.filter((a) => a.startsWith("r"))).toHaveLength(9);
  });

  test("domains with nothing due cost a seek each, within a budget, and an empty walk asks for no haste", async () => {
    const c = new QueueClaimer(store.sqlite, () => clock, { scanWindow: 100 });
    for (let i = 0; i < 150; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `u${i + j}@big.test`));
    // 2,500 domains with a recipient that is not due for an hour, sorting before the one with due mail
    const later = await enqueue(Array.from({ length: 2_500 }, (_, i) => `x@d${String(i).padStart(4, "0")}.test`));
    store.sqlite.run(`UPDATE recipients SET next_attempt_at = ? WHERE message_id = ?`, [clock + 3_600_000, later.id]);
    await enqueue(["new@zz.test"]);
    const walks: { got: string[]; unfinished: boolean }[] = [];
    for (let i = 0; i < 5 && !walks.some((w) => w.got.length > 0); i++) {
      walks.push({ got: c.claim(10, 60_000, new Set(["big.test"])).map((r) => r.address), unfinished: c.walkUnfinished });
    }
    // each walk looks at 1,000 domains and goes on from there: the third reaches zz.test
    expect(walks).toEqual([
      { got: [], unfinished: false },
      { got: [], unfinished: false },
      { got: ["new@zz.test"], unfinished: false },
    ]);
  });

  test("a walk that finds rows and runs out of budget mid-round asks to be claimed again soon", async () => {
    const c = new QueueClaimer(store.sqlite, () => clock, { scanWindow: 100 });
    // more backlog than a claim of 500 looks at
    for (let i = 0; i < 600; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `u${i + j}@big.test`));
    clock += 1;
    for (let i = 0; i < 250; i += 50) await enqueue(Array.from({ length: 50 }, (_, j) => `x@d${String(i + j).padStart(3, "0")}.test`));
    const first = c.claim(500, 60_000, new Set(["big.test"]));
    expect(first).toHaveLength(200); // 200 domains at most per walk
    expect(c.walkUnfinished).toBe(true);
    const second = c.claim(500, 60_000, new Set(["big.test"]));
    expect(second.map((r) => r.domain)).toEqual(Array.from({ length: 50 }, (_, i) => `d${String(200 + i).padStart(3, "0")}.test`));
    expect(c.walkUnfinished).toBe(false);
  });
});

describe("query plans", () => {
  const plan = (sql: string, params: Record<string, unknown>) =>
    (store.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all(params as never) as { detail: string }[]).map((r) => r.detail);
  const sqlOf = (...path: string[]) => preparedSql(claimer, path);
  const params = { now: 1, limit: 10, scan: 100, exclude: "[]" };

  test("claiming searches each side's own index by time and never scans the recipients table", () => {
    for (const [side, index] of [["fresh", "recipients_new"], ["retry", "recipients_retry"]] as const) {
      for (const kind of ["plain", "excluding"]) {
        const p = plan(sqlOf(side, kind), params);
        expect(p).toContain(`SEARCH recipients USING INDEX ${index} (next_attempt_at<?)`);
        expect(p.filter((d) => d.startsWith("SCAN recipients"))).toEqual([]);
      }
    }
  });

  test("stepping past a backlog seeks recipients_domain, one domain at a time, on each side", () => {
    for (const side of ["fresh", "retry"]) {
      expect(plan(sqlOf(side, "nextDomain"), { after: "" })).toEqual(["SEARCH recipients USING INDEX recipients_domain (domain>?)"]);
      expect(plan(sqlOf(side, "dueInDomain"), { domain: "x", now: 1, limit: 1 })).toEqual([
        "SEARCH recipients USING INDEX recipients_domain (domain=? AND next_attempt_at<?)",
      ]);
    }
  });

  test("the next due time is read from the first entry of each pending index", () => {
    const p = plan(sqlOf("nextDue"), {});
    expect(p).toContain("SCAN recipients USING COVERING INDEX recipients_new");
    expect(p).toContain("SCAN recipients USING COVERING INDEX recipients_retry");
    expect(p.filter((d) => /^SCAN recipients(?! USING COVERING INDEX recipients_(new|retry)$)/.test(d))).toEqual([]);
    expect(sqlOf("nextDue").match(/LIMIT 1/g)).toHaveLength(2);
  });

  test("recovering leases searches each pending index for rows due later, never the whole table", () => {
    const p = plan(sqlOf("recover"), {});
    expect(p).toContain("SEARCH recipients USING INDEX recipients_new (next_attempt_at>?)");
    expect(p).toContain("SEARCH recipients USING INDEX recipients_retry (next_attempt_at>?)");
    expect(p.filter((d) => d.startsWith("SCAN"))).toEqual([]);
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

  test("each side of a claim is still a search of its own index, never a scan of the table", () => {
    const c = new QueueClaimer(big.sqlite, () => 5_000_000);
    for (const [side, index] of [["fresh", "recipients_new"], ["retry", "recipients_retry"]] as const) {
      for (const kind of ["plain", "excluding"]) {
        const sql = preparedSql(c, [side, kind]);
        const plan = (big.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all({ now: 1, limit: 10, scan: 100, exclude: "[]" } as never) as { detail: string }[]).map((r) => r.detail);
        expect(plan).toContain(`SEARCH recipients USING INDEX ${index} (next_attempt_at<?)`);
        expect(plan.filter((d) => d.startsWith("SCAN recipients"))).toEqual([]);
      }
    }
  });

  test("claim returns the oldest due new and retry recipients, half each, and honours excluded domains", () => {
    const c = new QueueClaimer(big.sqlite, () => 5_000_000);
    const got = c.claim(100, 60_000);
    expect(got).toHaveLength(100);
    const n = (r: { id: string }) => Number(r.id.slice(1));
    // i % 10 = 0 is delivered, i % 3 = 0 deferred, the rest queued; each side in next_attempt_at (= i) order
    const pending = Array.from({ length: 1_000 }, (_, i) => i).filter((i) => i % 10 !== 0);
    expect(got.slice(0, 50).map(n)).toEqual(pending.filter((i) => i % 3 !== 0).slice(0, 50));
    expect(got.slice(50).map(n)).toEqual(pending.filter((i) => i % 3 === 0).slice(0, 50));
    const excluded = c.claim(100, 60_000, new Set(["d1.test", "d2.test"]));
    expect(excluded).toHaveLength(100);
    expect(excluded.some((r) => r.domain === "d1.test" || r.domain === "d2.test")).toBe(false);
    expect(c.nextDueAt()).not.toBeNull();
  });

  test("recovering leases frees exactly the leased recipients", () => {
    const c = new QueueClaimer(big.sqlite, () => 5_000_000);
    const leased = big.sqlite.query("SELECT count(*) AS n FROM recipients WHERE lease_until > 5000000").get() as { n: number };
    expect(leased.n).toBe(200); // the two claims above
    expect(c.recoverLeases()).toBe(200);
    expect(big.sqlite.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get()).toEqual({ n: 0 });
  });
});

/** The exact SQL a QueueClaimer prepared, by field path (a bun:sqlite Statement's toString() is its SQL). */
function preparedSql(c: QueueClaimer, path: string[]): string {
  let v: unknown = c;
  for (const key of path) v = (v as Record<string, unknown>)[key];
  return String(v);
}
