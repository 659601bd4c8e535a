import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { simpleParser } from "mailparser";
import type { Config } from "../config/schema.ts";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { Intake } from "../intake/accept.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import { createLogger } from "../observe/log.ts";
import { QueueClaimer, type StoredMessage } from "../queue/claim.ts";
import { Enqueuer, type MessageOptions } from "../queue/enqueue.ts";
import { OPTIONS_OFF, tempDir, testConfig } from "../../test/helpers/harness.ts";
import { OutcomeRecorder, fullReply } from "./outcome.ts";
import type { RecipientResult } from "./types.ts";

const MIN = 60_000;
const DAY = 86_400_000;

let dir: ReturnType<typeof tempDir>;
let config: Config;
let store: Store;
let clock: number;
let claimer: QueueClaimer;
let intake: Intake;
let logLines: Record<string, unknown>[];
let recorder: OutcomeRecorder;

beforeEach(() => {
  dir = tempDir();
  config = testConfig(dir.path, `[delivery]\nretry = ["1m", "5m", "15m"]\nmax_queue_time = "5d"\n[tracking]\nbounce_domain = "bounces.outpost.test"\n`);
  store = openStore(config.database.path);
  clock = Date.UTC(2026, 10, 25, 12, 0, 0);
  const events = new EventRecorder(store.sqlite);
  const enqueuer = new Enqueuer(store.sqlite, events, () => clock);
  intake = new Intake({
    store, enqueuer, hostname: "outpost.test",
    limits: { maxMessageSize: 1 << 20, maxRecipients: 100, maxHops: 50 }, tracking: config.tracking, publicUrl: config.http.public_url,
  });
  claimer = new QueueClaimer(store.sqlite, () => clock);
  logLines = [];
  recorder = makeRecorder(intake);
});

afterEach(() => {
  store.close();
  dir.cleanup();
});

function makeRecorder(dsnIntake: Pick<Intake, "acceptNow">, delivery = config.delivery, bounceDomain = config.tracking.bounce_domain): OutcomeRecorder {
  return new OutcomeRecorder({
    sqlite: store.sqlite, events: new EventRecorder(store.sqlite), intake: dsnIntake, delivery, bounceDomain,
    hostname: "outpost.test", log: createLogger("debug", (l) => logLines.push(JSON.parse(l))),
    userName: (id) => (id === null ? null : `user${id}`),
    now: () => clock, random: () => 0.5,
  });
}

const ORIGINAL = "From: sender@example.org\r\nTo: a@dest.test\r\nSubject: Hello\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n";

async function queued(recipients: string[], opts: { from?: string; raw?: string; options?: Partial<MessageOptions>; userId?: UserId } = {}) {
  const m = await intake.accept({
    userId: opts.userId ?? null, allowedDomains: null, envelopeFrom: opts.from ?? "sender@example.org", recipients,
    raw: Buffer.from(opts.raw ?? ORIGINAL), source: "smtp", options: { ...OPTIONS_OFF, ...opts.options },
  });
  const claimed = claimer.claim(100, 10 * MIN).filter((c) => c.messageId === m.id);
  return { message: claimer.loadMessage(m.id)!, claimed, ids: m.recipients.map((r) => r.id) };
}

interface Row { status: string; attempts: number; next_attempt_at: number; lease_until: number | null; last_reply: string | null; last_status: string | null; last_mx: string | null }
const row = (id: RecipientId) => store.sqlite.query("SELECT * FROM recipients WHERE id = ?").get(id) as Row;
const eventsOf = (id: RecipientId) =>
  (store.sqlite.query("SELECT type, details FROM events WHERE recipient_id = ? ORDER BY id").all(id) as { type: string; details: string }[]).map(
    (e) => ({ type: e.type, ...JSON.parse(e.details) }),
  );
const dsns = () => store.sqlite.query("SELECT id, body FROM messages WHERE source = 'dsn'").all() as { id: MessageId; body: Uint8Array }[];

const ok = (id: RecipientId): RecipientResult => ({ recipientId: id, outcome: "delivered", code: 250, enhanced: "2.0.0", reply: "250 2.0.0 Ok: queued as ABC", mx: "mx1.dest.test" });
const soft = (id: RecipientId): RecipientResult => ({ recipientId: id, outcome: "deferred", code: 451, enhanced: "4.3.0", reply: "Local error in processing", mx: "mx1.dest.test" });
const hard = (id: RecipientId): RecipientResult => ({ recipientId: id, outcome: "bounced", code: 550, enhanced: "5.1.1", reply: "550 5.1.1 <x>: user unknown", mx: "mx1.dest.test" });

describe("a delivered recipient", () => {
  test("is marked delivered, its lease cleared, one attempt counted, and a delivered event records mx, reply and status", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    recorder.settle(message, [ok(ids[0]!)])();
    const r = row(ids[0]!);
    expect(r).toMatchObject({ status: "delivered", attempts: 1, lease_until: null, last_reply: "250 2.0.0 Ok: queued as ABC", last_status: "2.0.0", last_mx: "mx1.dest.test" });
    expect(eventsOf(ids[0]!)).toEqual([
      { type: "queued" },
      { type: "delivered", mx: "mx1.dest.test", reply: "250 2.0.0 Ok: queued as ABC", status: "2.0.0", attempts: 1 },
    ]);
    expect(claimer.claim(10, MIN)).toEqual([]);
  });

  test("settled twice (a duplicate after its lease ran out) records the second result nowhere", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    recorder.settle(message, [ok(ids[0]!)])();
    recorder.settle(message, [hard(ids[0]!)])();
    expect(row(ids[0]!).status).toBe("delivered");
    expect(eventsOf(ids[0]!).map((e) => e.type)).toEqual(["queued", "delivered"]);
    expect(dsns()).toHaveLength(0);
  });
});

describe("a deferred recipient", () => {
  test("goes back to the queue at the first retry delay, with attempts + 1 and a deferred event", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    recorder.settle(message, [soft(ids[0]!)])();
    const r = row(ids[0]!);
    expect(r).toMatchObject({ status: "deferred", attempts: 1, lease_until: null, next_attempt_at: clock + 1 * MIN, last_reply: "451 4.3.0 Local error in processing" });
    const ev = eventsOf(ids[0]!)[1]!;
    expect(ev).toMatchObject({ type: "deferred", status: "4.3.0", mx: "mx1.dest.test", attempts: 1 });
    expect(ev.next_attempt_at).toBe(new Date(clock + MIN).toISOString());
  });

  test("follows the schedule on later failures and is claimable again when due", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    const id = ids[0]!;
    recorder.settle(message, [soft(id)])();
    clock += MIN;
    expect(claimer.claim(10, MIN).map((c) => c.attempts)).toEqual([1]);
    recorder.settle(message, [soft(id)])();
    expect(row(id).next_attempt_at).toBe(clock + 5 * MIN);
    clock += 5 * MIN;
    claimer.claim(10, MIN);
    recorder.settle(message, [soft(id)])();
    clock += 15 * MIN;
    claimer.claim(10, MIN);
    recorder.settle(message, [soft(id)])();
    expect(row(id)).toMatchObject({ attempts: 4, next_attempt_at: clock + 15 * MIN });
  });

  test("older than max_queue_time is bounced with 4.4.7, an expiry reply, and a DSN", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    clock += 5 * DAY;
    recorder.settle(message, [soft(ids[0]!)])();
    const r = row(ids[0]!);
    expect(r.status).toBe("bounced");
    expect(r.last_status).toBe("4.4.7");
    expect(r.last_reply).toContain("expired");
    expect(r.last_reply).toContain("451 4.3.0 Local error in processing");
    expect(eventsOf(ids[0]!)[1]).toMatchObject({ type: "bounced", status: "4.4.7" });
    expect(dsns()).toHaveLength(1);
    expect(Buffer.from(dsns()[0]!.body).toString()).toContain("Status: 4.4.7");
  });

  test("one day before expiry is retried no later than the expiry moment", async () => {
    recorder = makeRecorder(intake, { ...config.delivery, retry: [8 * 60 * MIN] });
    const { message, ids } = await queued(["a@dest.test"]);
    clock += 5 * DAY - 60 * MIN;
    recorder.settle(message, [soft(ids[0]!)])();
    expect(row(ids[0]!).next_attempt_at).toBe(message.createdAt + 5 * DAY);
  });
});

describe("a bounced recipient", () => {
  test("is marked bounced with a bounced event and never claimed again", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    recorder.settle(message, [hard(ids[0]!)])();
    expect(row(ids[0]!)).toMatchObject({ status: "bounced", attempts: 1, last_status: "5.1.1" });
    expect(eventsOf(ids[0]!)[1]).toEqual({ type: "bounced", mx: "mx1.dest.test", reply: "550 5.1.1 <x>: user unknown", status: "5.1.1", attempts: 1 });
    clock += DAY;
    expect(claimer.claim(10, MIN).filter((c) => c.id === ids[0])).toEqual([]);
  });

  test("sends one DSN to the envelope sender, from <>, listing every recipient bounced in the attempt", async () => {
    const { message, ids } = await queued(["a@dest.test", "b@dest.test", "c@dest.test"]);
    recorder.settle(message, [hard(ids[0]!), hard(ids[1]!), ok(ids[2]!)])();
    const all = dsns();
    expect(all).toHaveLength(1);
    const dsnRecipients = store.sqlite.query("SELECT address FROM recipients WHERE message_id = ?").all(all[0]!.id) as { address: string }[];
    expect(dsnRecipients.map((r) => r.address)).toEqual(["sender@example.org"]);
    const env = store.sqlite.query("SELECT envelope_from, user_id, track_bounces FROM messages WHERE id = ?").get(all[0]!.id);
    expect(env).toEqual({ envelope_from: "", user_id: null, track_bounces: 0 });
    const parsed = await simpleParser(Buffer.from(all[0]!.body));
    expect(parsed.text).toContain("Final-Recipient: rfc822; a@dest.test");
    expect(parsed.text).toContain("Final-Recipient: rfc822; b@dest.test");
    expect(parsed.text).not.toContain("c@dest.test");
    expect(parsed.text).toContain("Diagnostic-Code: smtp; 550 5.1.1 <x>: user unknown");
    const headers = parsed.attachments.find((a) => a.contentType === "text/rfc822-headers");
    expect(headers?.content.toString()).toContain("Subject: Hello");
  });

  test("of a message sent with bounce tracking sends no DSN", async () => {
    const { message, ids } = await queued(["a@dest.test"], { options: { trackBounces: true, unsubscribe: false } });
    recorder.settle(message, [hard(ids[0]!)])();
    expect(row(ids[0]!).status).toBe("bounced");
    expect(dsns()).toHaveLength(0);
  });

  test("of a message with bounce tracking sent without VERP (the bounce domain was removed since) goes to its sender", async () => {
    const { message, ids } = await queued(["a@dest.test"], { options: { trackBounces: true, unsubscribe: false } });
    makeRecorder(intake, config.delivery, "").settle(message, [hard(ids[0]!)])();
    expect(dsns()).toHaveLength(1);
  });

  const never: [string, { from?: string; raw?: string }][] = [
    ["the null sender", { from: "" }],
    ["an Auto-Submitted message", { raw: "Auto-Submitted: auto-generated\r\n" + ORIGINAL }],
    ["a multipart/report", { raw: 'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n' + ORIGINAL }],
    ["a message with 26 Received headers", { raw: "Received: from x by y\r\n".repeat(26) + ORIGINAL }],
  ];
  for (const [what, opts] of never) {
    test(`of ${what} sends no DSN`, async () => {
      const { message, ids } = await queued(["a@dest.test"], opts);
      recorder.settle(message, [hard(ids[0]!)])();
      expect(row(ids[0]!).status).toBe("bounced");
      expect(dsns()).toHaveLength(0);
      expect(logLines.find((l) => l.event === "dsn_skipped")).toBeDefined();
    });
  }

  test("still settles, and logs, when the DSN cannot be queued", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    const failing = makeRecorder({ acceptNow: () => { throw new Error("disk full"); } });
    failing.settle(message, [hard(ids[0]!)])();
    expect(row(ids[0]!).status).toBe("bounced");
    expect(logLines.find((l) => l.event === "dsn_failed")).toMatchObject({ level: "warn", queue_id: message.id });
  });
});

describe("a hard bounce", () => {
  const suppressed = () => store.sqlite.query("SELECT address, reason FROM suppressions ORDER BY address").all();
  const lists = () => store.sqlite.query("SELECT user_id, address FROM suppressions ORDER BY user_id, address").all();
  const bounce = (id: RecipientId, code: number, enhanced: string, aboutRecipient = true): RecipientResult =>
    ({ recipientId: id, outcome: "bounced", code, enhanced, reply: `${code} ${enhanced} refused`, mx: "mx1.dest.test", aboutRecipient });

  test("of a bad address (5.1.x) puts it on the suppression list, so later mail to it is not sent", async () => {
    const { message, ids } = await queued(["Gone@Dest.test"]);
    recorder.settle(message, [bounce(ids[0]!, 550, "5.1.1")])();
    expect(suppressed()).toEqual([{ address: "gone@dest.test", reason: "hard_bounce" }]);
    expect(logLines.find((l) => l.event === "suppression_added")).toMatchObject({ address: "gone@dest.test", reason: "hard_bounce", dsn: "5.1.1" });
    const again = await intake.accept({
      userId: null, allowedDomains: null, envelopeFrom: "sender@example.org", recipients: ["gone@dest.test"],
      raw: Buffer.from(ORIGINAL), source: "smtp", options: OPTIONS_OFF,
    });
    expect(again.recipients[0]!.status).toBe("suppressed");
  });

  test("suppresses for the message's owner only: their later mail is suppressed, another user's and ownerless mail are not", async () => {
    const ann = 1 as UserId;
    const bob = 2 as UserId;
    const { message, ids } = await queued(["gone@dest.test"], { userId: ann });
    recorder.settle(message, [bounce(ids[0]!, 550, "5.1.1")])();
    expect(lists()).toEqual([{ user_id: 1, address: "gone@dest.test" }]);
    expect(logLines.find((l) => l.event === "suppression_added")).toMatchObject({ address: "gone@dest.test", user: "user1" });
    const again = async (userId: UserId | null) =>
      (await intake.accept({
        userId, allowedDomains: null, envelopeFrom: "sender@example.org", recipients: ["GONE@dest.test"],
        raw: Buffer.from(ORIGINAL), source: "smtp", options: OPTIONS_OFF,
      })).recipients[0]!.status;
    expect(await again(ann)).toBe("suppressed");
    expect(await again(bob)).toBe("queued");
    expect(await again(null)).toBe("queued");
  });

  test("of ownerless mail (trusted networks) goes to the ownerless list", async () => {
    const { message, ids } = await queued(["gone@dest.test"]);
    recorder.settle(message, [bounce(ids[0]!, 550, "5.1.1")])();
    expect(lists()).toEqual([{ user_id: 0, address: "gone@dest.test" }]);
  });

  test("of a domain with a null MX suppresses too; a full mailbox, a policy refusal or an expiry do not", async () => {
    const nullMx = await queued(["a@nullmx.test"]);
    recorder.settleRouteFailure(nullMx.message, nullMx.claimed, { kind: "permanent", enhanced: "5.1.10", reason: "null MX" })();
    const others = await queued(["full@dest.test", "policy@dest.test", "late@dest.test"]);
    recorder.settle(others.message, [bounce(others.ids[0]!, 552, "5.2.2"), bounce(others.ids[1]!, 554, "5.7.1")])();
    clock += 5 * DAY;
    recorder.settle(others.message, [soft(others.ids[2]!)])();
    expect(row(others.ids[2]!).status).toBe("bounced");
    expect(suppressed()).toEqual([{ address: "a@nullmx.test", reason: "hard_bounce" }]);
  });

  test("said in words (a 550 'user unknown' without a 5.1.x code) suppresses too; a full mailbox under 5.1.1 does not", async () => {
    const { message, ids } = await queued(["gone@dest.test", "full@dest.test"]);
    const words = (id: RecipientId, reply: string): RecipientResult =>
      ({ recipientId: id, outcome: "bounced", code: 550, enhanced: "5.0.0", reply, mx: "mx1.dest.test", aboutRecipient: true });
    recorder.settle(message, [
      words(ids[0]!, "550 Requested action not taken: user unknown"),
      { ...words(ids[1]!, "552 5.1.1 <full@dest.test>: Recipient overquota"), code: 552, enhanced: "5.1.1" },
    ])();
    expect(suppressed()).toEqual([{ address: "gone@dest.test", reason: "hard_bounce" }]);
  });

  test("said of the sender or of all recipients at once suppresses nobody", async () => {
    const { message, ids } = await queued(["a@dest.test", "b@dest.test", "c@dest.test"]);
    recorder.settle(message, [
      bounce(ids[0]!, 550, "5.1.8"), // "sender address rejected", even as an RCPT-level reply
      bounce(ids[1]!, 550, "5.1.1", false), // a MAIL FROM or DATA reply that every recipient shares
      bounce(ids[2]!, 550, "5.1.0"),
    ])();
    expect(suppressed()).toEqual([]);
  });

  test("is listed in the same transaction as the bounce: a rollback leaves the address off the list", async () => {
    const { message, ids } = await queued(["gone@dest.test"]);
    expect(() => store.sqlite.transaction(() => {
      recorder.settle(message, [bounce(ids[0]!, 550, "5.1.1")]);
      throw new Error("commit failed");
    })()).toThrow("commit failed");
    expect(suppressed()).toEqual([]);
  });
});

describe("the delay warning (delivery.delay_warning)", () => {
  const HOUR = 60 * MIN;
  const warned = () => recorder = makeRecorder(intake, { ...config.delivery, delay_warning: 4 * HOUR });

  test("is sent once, when a deferral finds the message queued for the configured time, and the mail is still retried", async () => {
    warned();
    const { message, ids } = await queued(["a@dest.test", "b@dest.test"]);
    clock += 3 * HOUR;
    recorder.settle(message, [soft(ids[0]!), soft(ids[1]!)])();
    expect(dsns()).toHaveLength(0);
    clock += HOUR;
    recorder.settle(message, [soft(ids[0]!), soft(ids[1]!)])();
    expect(dsns()).toHaveLength(1);
    expect(row(ids[0]!).status).toBe("deferred");
    const parsed = await simpleParser(Buffer.from(dsns()[0]!.body));
    expect(parsed.subject).toBe("Delayed Mail (still being retried)");
    expect(parsed.text).toContain("THIS IS A WARNING ONLY");
    expect(parsed.text).toContain("Action: delayed");
    expect(parsed.text).toContain("Status: 4.3.0");
    expect(parsed.text).toContain("Final-Recipient: rfc822; b@dest.test");
    expect(parsed.text).toContain(`Will-Retry-Until: ${new Date(message.createdAt + 5 * DAY).toUTCString().slice(0, 16)}`);
    expect(logLines.find((l) => l.event === "dsn_queued")).toMatchObject({ action: "delayed", queue_id: message.id });
    clock += HOUR;
    recorder.settle(message, [soft(ids[0]!)])();
    expect(dsns()).toHaveLength(1);
  });

  test("is off by default: a deferral days later sends none", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    clock += 4 * DAY;
    recorder.settle(message, [soft(ids[0]!)])();
    expect(row(ids[0]!).status).toBe("deferred");
    expect(dsns()).toHaveLength(0);
  });

  test("that the store refuses is tried again at the next deferral (the message is not marked warned)", async () => {
    warned();
    const { message, ids } = await queued(["a@dest.test"]);
    clock += 5 * HOUR;
    store.sqlite.run("CREATE TRIGGER no_dsn BEFORE INSERT ON messages WHEN NEW.source = 'dsn' BEGIN SELECT RAISE(ABORT, 'disk full'); END");
    recorder.settle(message, [soft(ids[0]!)])();
    expect(dsns()).toHaveLength(0);
    expect(logLines.find((l) => l.event === "dsn_failed")).toMatchObject({ action: "delayed" });
    store.sqlite.run("DROP TRIGGER no_dsn");
    clock += HOUR;
    recorder.settle(message, [soft(ids[0]!)])();
    expect(dsns()).toHaveLength(1);
    expect(row(ids[0]!).status).toBe("deferred");
  });

  test("is not sent for a message with bounce tracking, nor for the null sender", async () => {
    warned();
    const tracked = await queued(["a@dest.test"], { options: { trackBounces: true, unsubscribe: false } });
    const nullSender = await queued(["b@dest.test"], { from: "" });
    clock += 5 * HOUR;
    recorder.settle(tracked.message, [soft(tracked.ids[0]!)])();
    recorder.settle(nullSender.message, [soft(nullSender.ids[0]!)])();
    expect(dsns()).toHaveLength(0);
  });
});

describe("the DSN and its bounce", () => {
  test("commit together: when the transaction around them fails, neither is stored, and the next attempt sends the DSN", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    // the settle batch's transaction, failing after the settle (as a failed commit would)
    expect(() => store.sqlite.transaction(() => {
      recorder.settle(message, [hard(ids[0]!)]);
      throw new Error("commit failed");
    })()).toThrow("commit failed");
    expect(row(ids[0]!).status).toBe("queued");
    expect(dsns()).toHaveLength(0);
    recorder.settle(message, [hard(ids[0]!)])();
    expect(row(ids[0]!).status).toBe("bounced");
    expect(dsns()).toHaveLength(1);
  });

  test("a DSN the store refuses rolls back alone: the bounce commits and the failure is logged", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    store.sqlite.run("CREATE TRIGGER no_dsn BEFORE INSERT ON messages WHEN NEW.source = 'dsn' BEGIN SELECT RAISE(ABORT, 'disk full'); END");
    recorder.settle(message, [hard(ids[0]!)])();
    expect(row(ids[0]!).status).toBe("bounced");
    expect(dsns()).toHaveLength(0);
    expect(logLines.find((l) => l.event === "dsn_failed")).toMatchObject({ level: "warn", queue_id: message.id });
  });

  test("nothing is logged until the caller says the transaction committed", async () => {
    const { message, ids } = await queued(["a@dest.test"]);
    const afterCommit = recorder.settle(message, [hard(ids[0]!)]);
    expect(logLines).toEqual([]);
    afterCommit();
    expect(logLines.map((l) => l.event)).toEqual(["delivery", "dsn_queued"]);
  });
});

describe("settling several recipients at once", () => {
  test("applies each result and skips a recipient that was deleted meanwhile", async () => {
    const { message, ids } = await queued(["a@dest.test", "b@dest.test", "c@dest.test"]);
    store.sqlite.run("DELETE FROM recipients WHERE id = ?", [ids[2]!]);
    recorder.settle(message, [ok(ids[0]!), soft(ids[1]!), ok(ids[2]!)])();
    expect(row(ids[0]!).status).toBe("delivered");
    expect(row(ids[1]!).status).toBe("deferred");
    expect(eventsOf(ids[2]!).map((e) => e.type)).toEqual(["queued"]);
  });

  test("commits all or nothing: a failure part-way leaves every recipient as it was", async () => {
    const { message, ids } = await queued(["a@dest.test", "b@dest.test"]);
    store.sqlite.run(
      `CREATE TRIGGER fail_second BEFORE UPDATE ON recipients WHEN NEW.id = '${ids[1]}' BEGIN SELECT RAISE(ABORT, 'boom'); END`,
    );
    expect(() => recorder.settle(message, [ok(ids[0]!), ok(ids[1]!)])).toThrow("boom");
    expect(row(ids[0]!).status).toBe("queued");
    expect(eventsOf(ids[0]!).map((e) => e.type)).toEqual(["queued"]);
  });

  test("writes one JSON log line per recipient with queue id, recipient, mx, reply, delay and status", async () => {
    const { message, ids } = await queued(["a@dest.test", "b@dest.test"]);
    clock += 90_000;
    recorder.settle(message, [ok(ids[0]!), soft(ids[1]!)])();
    const lines = logLines.filter((l) => l.event === "delivery");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ queue_id: message.id, recipient: "a@dest.test", mx: "mx1.dest.test", reply: "250 2.0.0 Ok: queued as ABC", delay_ms: 90_000, status: "delivered" });
    expect(lines[1]).toMatchObject({ recipient: "b@dest.test", status: "deferred", dsn: "4.3.0" });
  });
});

describe("route failures", () => {
  test("a null MX bounces the recipients at once with 5.1.10 and a DSN", async () => {
    const { message, claimed } = await queued(["a@nullmx.test", "b@nullmx.test"]);
    recorder.settleRouteFailure(message, claimed, { kind: "permanent", enhanced: "5.1.10", reason: "domain nullmx.test accepts no mail (null MX)" })();
    for (const c of claimed) expect(row(c.id)).toMatchObject({ status: "bounced", last_status: "5.1.10", last_reply: "domain nullmx.test accepts no mail (null MX)" });
    const body = Buffer.from(dsns()[0]!.body).toString();
    expect(body).toContain("Status: 5.1.10");
    expect(body).toContain("Diagnostic-Code: X-Outpost; domain nullmx.test accepts no mail (null MX)");
  });

  test("a DNS failure defers with 4.4.3 and never bounces before expiry", async () => {
    const { message, claimed } = await queued(["a@servfail.test"]);
    recorder.settleRouteFailure(message, claimed, { kind: "temporary", reason: "SERVFAIL looking up MX for servfail.test" })();
    expect(row(claimed[0]!.id)).toMatchObject({ status: "deferred", attempts: 1, last_status: "4.4.3" });
    expect(dsns()).toHaveLength(0);
  });
});

describe("the recorded reply", () => {
  const r = (code: number, enhanced: string, reply: string): RecipientResult => ({ recipientId: "r" as RecipientId, outcome: "deferred", code, enhanced, reply });
  test("gets its code and enhanced code prefixed when the transport gave only the text", () => {
    expect(fullReply(r(451, "4.7.1", "try later"))).toBe("451 4.7.1 try later");
  });
  test("is kept as it is when it already starts with its code", () => {
    expect(fullReply(r(550, "5.1.1", "550 5.1.1 unknown"))).toBe("550 5.1.1 unknown");
    expect(fullReply(r(550, "5.1.1", "5.1.1 unknown"))).toBe("550 5.1.1 unknown");
  });
  test("of a local failure (no SMTP reply) is the description, on one line", () => {
    expect(fullReply(r(0, "", "connect ECONNREFUSED\r\n127.0.0.9:25"))).toBe("connect ECONNREFUSED 127.0.0.9:25");
  });
});
