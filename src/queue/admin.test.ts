import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import type { MessageId, UserId } from "../mail/ids.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { QueueAdmin, selections, type AffectedMessage, type QueueFilter, type Target } from "./admin.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer } from "./enqueue.ts";
import { QueueInspector } from "./inspect.ts";

const HOUR = 3_600_000;
let dir: ReturnType<typeof tempDir>;
let store: Store;
let clock: number;
let id: MessageId;

async function enqueue(envelopeFrom: string, recipients: string[], at = clock, userId: UserId | null = null): Promise<MessageId> {
  const m = await new Enqueuer(store.sqlite, new EventRecorder(store.sqlite), () => at).enqueue({
    userId, envelopeFrom, recipients, suppressed: new Set(),
    body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "smtp",
    options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
  });
  return m.id;
}

const rows = () =>
  store.sqlite.query("SELECT address, status, next_attempt_at AS next FROM recipients ORDER BY address").all() as { address: string; status: string; next: number }[];
const statusOf = (address: string) => rows().find((r) => r.address === address)?.status;
const all = (filter = {}): Target => ({ kind: "all", filter });

beforeEach(async () => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  clock = 1_000_000_000;
  id = await enqueue("s@example.org", ["a@d.test", "b@d.test"]);
});

afterEach(() => {
  store.close();
  dir.cleanup();
});

describe("retry and delete", () => {
  test("retry leaves a recipient that is in flight alone, so it cannot be claimed twice", () => {
    const claimer = new QueueClaimer(store.sqlite, () => clock);
    const [inFlight] = claimer.claim(1, 60_000);
    store.sqlite.run("UPDATE recipients SET status = 'deferred', next_attempt_at = ? WHERE id != ?", [clock + HOUR, inFlight!.id]);
    const admin = new QueueAdmin(store.sqlite, () => clock);
    expect(admin.apply("retry", { kind: "message", id })).toMatchObject({ recipients: 1, messages: 1, inFlight: 1 });
    expect(admin.apply("retry", all()).recipients).toBe(0);
    const again = claimer.claim(10, 60_000);
    expect(again.map((r) => r.id)).not.toContain(inFlight!.id);
    expect(again).toHaveLength(1);
  });

  test("the listing (queue list) shows only pending recipients and a message (queue show) shows them all", () => {
    store.sqlite.run("UPDATE recipients SET status = 'delivered' WHERE address = 'a@d.test'");
    const inspector = new QueueInspector(store.sqlite);
    expect([...inspector.pending()][0]!.recipients.map((r) => r.address)).toEqual(["b@d.test"]);
    expect(inspector.getMessage(id)!.recipients.map((r) => r.status)).toEqual(["delivered", "queued"]);
  });

  test("delete by message id removes the message and every recipient row, finished ones included", () => {
    store.sqlite.run("UPDATE recipients SET status = 'delivered' WHERE address = 'a@d.test'");
    const admin = new QueueAdmin(store.sqlite, () => clock);
    expect(admin.apply("delete", { kind: "message", id })).toEqual({ messages: 1, recipients: 2, inFlight: 0, messagesDeleted: 1 });
    expect(store.sqlite.query("SELECT count(*) AS n FROM recipients").get()).toEqual({ n: 0 });
    expect(admin.resolve(id)).toBeNull();
  });

  test("delete by filter removes the matching open recipients, and the message only when none is left", async () => {
    const other = await enqueue("s@example.org", ["c@e.test"]);
    store.sqlite.run("UPDATE recipients SET status = 'delivered' WHERE address = 'b@d.test'");
    const admin = new QueueAdmin(store.sqlite, () => clock);
    const r = admin.apply("delete", all());
    expect(r).toEqual({ messages: 2, recipients: 2, inFlight: 0, messagesDeleted: 1 });
    expect(rows().map((x) => x.address)).toEqual(["b@d.test"]);
    expect(admin.resolve(id)).toEqual({ kind: "message", id });
    expect(admin.resolve(other)).toBeNull();
  });
});

describe("hold and release", () => {
  test("a held recipient is never claimed, even long after it came due, and is out of the due counts", () => {
    const admin = new QueueAdmin(store.sqlite, () => clock);
    expect(admin.apply("hold", { kind: "message", id })).toMatchObject({ messages: 1, recipients: 2 });
    clock += 10 * HOUR;
    const claimer = new QueueClaimer(store.sqlite, () => clock);
    expect(claimer.claim(10, 60_000)).toEqual([]);
    expect(claimer.claim(10, 60_000, new Set(["x.test"]))).toEqual([]);
    expect(claimer.nextDueAt()).toBeNull();
    expect(claimer.recoverLeases()).toBe(0);
    const inspector = new QueueInspector(store.sqlite);
    expect(inspector.queueDepth()).toBe(0);
    expect(inspector.pendingCounts()).toEqual({ messages: 1, recipients: 2, held: 2 });
    expect([...inspector.pending()][0]!.recipients.map((r) => r.status)).toEqual(["held", "held"]);
  });

  test("release makes held recipients due now: queued if never tried, deferred otherwise", () => {
    store.sqlite.run("UPDATE recipients SET status = 'deferred', attempts = 2, next_attempt_at = ? WHERE address = 'b@d.test'", [clock + HOUR]);
    const admin = new QueueAdmin(store.sqlite, () => clock);
    admin.apply("hold", all());
    clock += 5 * HOUR;
    expect(admin.apply("release", all())).toMatchObject({ messages: 1, recipients: 2 });
    expect(rows()).toEqual([
      { address: "a@d.test", status: "queued", next: clock },
      { address: "b@d.test", status: "deferred", next: clock },
    ]);
    expect(new QueueClaimer(store.sqlite, () => clock).claim(10, 60_000)).toHaveLength(2);
  });

  test("hold leaves a recipient in flight alone (its result could not be recorded on a held row) and says so", () => {
    const [inFlight] = new QueueClaimer(store.sqlite, () => clock).claim(1, 60_000);
    const r = new QueueAdmin(store.sqlite, () => clock).apply("hold", { kind: "message", id });
    expect(r).toMatchObject({ recipients: 1, inFlight: 1 });
    const statuses = store.sqlite.query("SELECT id, status FROM recipients").all() as { id: string; status: string }[];
    expect(statuses.find((s) => s.id === inFlight!.id)!.status).toBe("queued");
  });

  test("a recipient id names that recipient only", () => {
    const rid = (store.sqlite.query("SELECT id FROM recipients WHERE address = 'b@d.test'").get() as { id: string }).id;
    const admin = new QueueAdmin(store.sqlite, () => clock);
    const target = admin.resolve(rid)!;
    expect(target.kind).toBe("recipient");
    expect(admin.apply("hold", target).recipients).toBe(1);
    expect([statusOf("a@d.test"), statusOf("b@d.test")]).toEqual(["queued", "held"]);
    expect(admin.apply("release", target).recipients).toBe(1);
    expect(admin.apply("delete", target)).toMatchObject({ recipients: 1, messagesDeleted: 0 });
    expect(rows().map((x) => x.address)).toEqual(["a@d.test"]);
  });
});

describe("filters", () => {
  test("--sender matches an address case-insensitively, @domain any sender there, and '' the null sender", async () => {
    await enqueue("Boss@Corp.test", ["c@d.test"]);
    await enqueue("", ["dsn@d.test"]);
    const admin = new QueueAdmin(store.sqlite, () => clock);
    expect(admin.apply("hold", all({ sender: "boss@corp.test" })).recipients).toBe(1);
    expect(statusOf("c@d.test")).toBe("held");
    expect(admin.apply("hold", all({ sender: "@example.org" })).recipients).toBe(2);
    expect(admin.apply("hold", all({ sender: "" })).recipients).toBe(1);
    expect(statusOf("dsn@d.test")).toBe("held");
    // LIKE wildcards in the domain are taken literally
    expect(admin.apply("release", all({ sender: "@ex_mple.org" })).recipients).toBe(0);
  });

  test("--domain, --status and --older-than narrow the selection; all given filters must match", async () => {
    await enqueue("s@example.org", ["c@e.test"], clock - 3 * HOUR);
    store.sqlite.run("UPDATE recipients SET status = 'deferred', attempts = 1 WHERE address = 'b@d.test'");
    const admin = new QueueAdmin(store.sqlite, () => clock);
    expect(admin.apply("hold", all({ domain: "e.test" })).recipients).toBe(1);
    expect(statusOf("c@e.test")).toBe("held");
    expect(admin.apply("hold", all({ status: "deferred" })).recipients).toBe(1);
    expect(statusOf("b@d.test")).toBe("held");
    expect(admin.apply("release", all({ olderThanMs: 2 * HOUR })).recipients).toBe(1);
    expect(statusOf("c@e.test")).toBe("queued");
    expect(admin.apply("delete", all({ status: "held", domain: "d.test" })).recipients).toBe(1);
    expect(rows().map((x) => x.address)).toEqual(["a@d.test", "c@e.test"]);
  });

  test("finished recipients are never touched", () => {
    store.sqlite.run("UPDATE recipients SET status = 'bounced'");
    const admin = new QueueAdmin(store.sqlite, () => clock);
    for (const action of ["retry", "hold", "release", "delete"] as const) expect(admin.apply(action, all()).recipients).toBe(0);
    expect(admin.apply("hold", { kind: "message", id }).recipients).toBe(0);
    expect(rows().map((r) => r.status)).toEqual(["bounced", "bounced"]);
  });
});

test("a large selection commits in batches, whole messages each, and reports every message once after its commit", async () => {
  const ids = [id];
  for (let i = 0; i < 400; i++) ids.push(await enqueue("bulk@example.org", ["x@d.test", "y@d.test", "z@d.test"]));
  const batches: AffectedMessage[][] = [];
  const admin = new QueueAdmin(store.sqlite, () => clock, { batch: 100 });
  const r = admin.apply("hold", all(), (batch) => {
    // the batch is committed: a second connection sees it
    const other = openStore(join(dir.path, "outpost.db"));
    const held = other.sqlite.query("SELECT count(*) AS n FROM recipients WHERE message_id = ? AND status = 'held'").get(batch[0]!.id) as { n: number };
    other.close();
    expect(held.n).toBe(batch[0]!.recipients.length);
    batches.push(batch);
  });
  expect(r).toMatchObject({ messages: 401, recipients: 1202 });
  expect(batches.length).toBeGreaterThan(1);
  const seen = batches.flat().map((m) => m.id);
  expect(new Set(seen).size).toBe(401);
  expect(seen.sort()).toEqual(ids.sort());
  expect(batches.flat().every((m) => m.recipients.length === (m.id === id ? 2 : 3))).toBe(true);
});

test("the filtered reads go through the partial indexes, never reading finished rows", () => {
  const plan = (sql: string, params: Record<string, string | number>) =>
    (store.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all(params) as { detail: string }[]).map((p) => p.detail).join("; ");
  const cases: [Parameters<typeof selections>[0], QueueFilter, string[]][] = [
    ["hold", {}, ["recipients_new", "recipients_retry"]],
    ["release", { sender: "@example.org", olderThanMs: HOUR }, ["recipients_held"]],
    ["delete", { domain: "d.test" }, ["recipients_domain", "recipients_domain", "recipients_held"]],
  ];
  for (const [action, filter, indexes] of cases) {
    const plans = selections(action, filter, clock).map((s) => plan(s.sql, s.params));
    expect(plans.map((p) => p.match(/ r USING INDEX (\w+)/)?.[1])).toEqual(indexes);
    for (const p of plans) expect(p).not.toMatch(/SCAN r(?! USING)/);
  }
});
