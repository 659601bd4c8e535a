/** `outpost queue …` as an operator runs it: a real process against a temp data dir with a populated queue. */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { addUser, findUser } from "../../src/auth/users.ts";
import { openStore, type Store } from "../../src/db/client.ts";
import { EventRecorder } from "../../src/events/record.ts";
import { loadConfig } from "../../src/config/load.ts";
import type { MessageId, RecipientId } from "../../src/mail/ids.ts";
import { Enqueuer } from "../../src/queue/enqueue.ts";
import { QueueSettler } from "../../src/queue/settle.ts";
import { runCli, tempDir } from "../helpers/harness.ts";

const MIN = 60_000;
let dir: { path: string; cleanup: () => void };
let configFile: string;

const outpost = (...args: string[]) => runCli(dir.path, [...args, "--config", configFile]);

function withStore<T>(fn: (s: Store) => T): T {
  const store = openStore(loadConfig(configFile).database.path);
  try {
    return fn(store);
  } finally {
    store.close();
  }
}

interface Fixture {
  deferredMsg: MessageId;
  deferredRcpt: RecipientId;
  freshMsg: MessageId;
  doneMsg: MessageId;
}
let fx: Fixture;

/** Three messages: one of user alice with a deferred recipient (retry in 1 h), one fresh, one fully delivered. */
async function populate(): Promise<Fixture> {
  const store = openStore(loadConfig(configFile).database.path);
  try {
    store.sqlite.run("DELETE FROM recipients; DELETE FROM messages; DELETE FROM events;");
    const events = new EventRecorder(store.sqlite);
    const enqueuer = new Enqueuer(store.sqlite, events, () => Date.now() - 2 * 60 * MIN);
    const settler = new QueueSettler(store.sqlite, events);
    const body = (subject: string) => Buffer.from(`From: a@example.org\r\nSubject: ${subject}\r\n\r\nhello\r\n`);
    const opts = { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false };
    const common = { userId: null, suppressed: new Set<string>(), source: "smtp" as const, options: opts };
    const alice = findUser(store.db, "alice")?.id ?? (await addUser(store.db, "alice", "pw")).id;
    const deferred = await enqueuer.enqueue({ ...common, userId: alice, envelopeFrom: "alice@example.org", recipients: ["slow@dest.test", "fast@dest.test"], body: body("one"), subject: "one" });
    const fresh = await enqueuer.enqueue({ ...common, envelopeFrom: "", recipients: ["bob@other.test"], body: body("two"), subject: "two" });
    const done = await enqueuer.enqueue({ ...common, envelopeFrom: "carol@example.org", recipients: ["x@dest.test"], body: body("three"), subject: "three" });
    const now = Date.now();
    settler.transaction(() => {
      const slow = settler.pendingRecipient(deferred.recipients[0]!.id)!;
      settler.markDeferred(slow, { reply: "451 4.7.1 Greylisted, try again later", status: "4.7.1", mx: "mx1.dest.test" }, now + 60 * MIN, now);
      settler.markDelivered(settler.pendingRecipient(deferred.recipients[1]!.id)!, { reply: "250 ok", status: "2.0.0", mx: "mx1.dest.test" }, now);
      settler.markDelivered(settler.pendingRecipient(done.recipients[0]!.id)!, { reply: "250 ok", status: "2.0.0" }, now);
    });
    return { deferredMsg: deferred.id, deferredRcpt: deferred.recipients[0]!.id, freshMsg: fresh.id, doneMsg: done.id };
  } finally {
    store.close();
  }
}

interface ListJson {
  messages: { id: string; envelope: string; user: string | null; recipients: { address: string; status: string; held: boolean; attempts: number; next_attempt_at: string | null }[] }[];
  more: number;
  total: { messages: number; recipients: number; held: number };
  throttle: { concurrency: number; in_use: number; destinations: Record<string, unknown>[] } | null;
}

const rcpt = (id: RecipientId) =>
  withStore((s) => s.sqlite.query("SELECT status, next_attempt_at FROM recipients WHERE id = ?").get(id) as { status: string; next_attempt_at: number } | null);

beforeAll(() => {
  dir = tempDir();
  configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = ${JSON.stringify(join(dir.path, "data"))}\nhostname = "outpost.test"\n`);
});
afterAll(() => dir.cleanup());
beforeEach(async () => {
  fx = await populate();
});

describe("outpost queue list", () => {
  test("shows pending recipients grouped by message, with age, sender, status, tries, next attempt and last reply", () => {
    const r = outpost("queue", "list");
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^MESSAGE\s+AGE\s+SIZE\s+USER\s+SENDER\s+RECIPIENT\s+STATUS\s+TRIES\s+NEXT ATTEMPT\s+LAST REPLY$/);
    const slow = lines.find((l) => l.includes("slow@dest.test"))!;
    expect(slow).toContain(fx.deferredMsg);
    expect(slow).toMatch(/\b2h\b/);
    expect(slow).toMatch(/\balice\s+alice@example.org/); // the owner, by name
    expect(lines.find((l) => l.includes("bob@other.test"))).toMatch(/B\s+-\s+<>/); // no owner
    expect(slow).toMatch(/deferred\s+1\s+\d{4}-\d\d-\d\dT/);
    expect(slow).toContain("451 4.7.1 Greylisted");
    const bob = lines.find((l) => l.includes("bob@other.test"))!;
    expect(bob).toContain("<>");
    expect(bob).toMatch(/queued\s+0\s+now/);
    expect(r.out).not.toContain("fast@dest.test");
    expect(r.out).not.toContain(fx.doneMsg);
    expect(lines.at(-1)).toBe("-- 2 messages, 2 recipients pending");
  });

  test("columns line up: every recipient starts at the same column", () => {
    const lines = outpost("queue", "list").out.split("\n");
    const header = lines[0]!;
    const col = header.indexOf("RECIPIENT");
    for (const l of lines.filter((x) => x.includes("@dest.test") || x.includes("@other.test"))) {
      expect(l.slice(col)).toMatch(/^(slow@dest\.test|bob@other\.test)/);
    }
  });

  test("--json prints the same messages as JSON, with the totals and (no) throttle state", () => {
    const r = outpost("queue", "list", "--json");
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out) as ListJson;
    expect(doc).toMatchObject({ more: 0, total: { messages: 2, recipients: 2, held: 0 }, throttle: null });
    const list = doc.messages;
    expect(list.map((m) => m.id)).toEqual([fx.deferredMsg, fx.freshMsg]);
    expect(list[0]!.recipients).toHaveLength(1);
    expect(list[0]!.recipients[0]).toMatchObject({ address: "slow@dest.test", status: "deferred", attempts: 1 });
    expect(list[1]!.envelope).toBe("");
    expect([list[0]!.user, list[1]!.user]).toEqual(["alice", null]);
  });

  test("says so when the queue is empty", () => {
    withStore((s) => s.sqlite.run("DELETE FROM recipients; DELETE FROM messages;"));
    const r = outpost("queue", "list");
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe("queue is empty");
    expect(JSON.parse(outpost("queue", "list", "--json").out)).toEqual({ messages: [], more: 0, total: { messages: 0, recipients: 0, held: 0 }, throttle: null });
  });
});

describe("outpost queue list with a running server", () => {
  const throttleFile = () => join(dir.path, "data", "throttle.json");
  const snapshot = (time: number) => ({
    time, concurrency: 200, inUse: 3,
    destinations: [
      { key: "mx1.dest.test", limit: 2, max: 5, inUse: 2, rate: { count: 150, perMs: 60_000 }, backoffUntil: time + 60_000, dead: false, deadUntil: null, consecutiveFailures: 0 },
      { key: "mx.idle.test", limit: 5, max: 5, inUse: 0, rate: null, backoffUntil: null, dead: false, deadUntil: null, consecutiveFailures: 0 },
    ],
  });

  test("shows the throttle state serve published: reduced windows, rates and back-offs", () => {
    writeFileSync(throttleFile(), JSON.stringify(snapshot(Date.now())));
    const r = outpost("queue", "list");
    expect(r.code).toBe(0);
    expect(r.out).toContain("delivery: 3 of 200 connections in use");
    expect(r.out).toMatch(/mx1\.dest\.test\s+2\s+2\/5\s+150\/min\s+backing off until \d{4}-/);
    expect(r.out).not.toContain("mx.idle.test");
  });

  test("--json carries the same throttle state under a throttle key", () => {
    const time = Date.now();
    writeFileSync(throttleFile(), JSON.stringify(snapshot(time)));
    const r = outpost("queue", "list", "--json");
    rmSync(throttleFile());
    expect(r.code).toBe(0);
    const { throttle, messages } = JSON.parse(r.out) as ListJson;
    expect(messages).toHaveLength(2);
    expect(throttle).toMatchObject({ concurrency: 200, in_use: 3, published_at: new Date(time).toISOString() });
    expect(throttle!.destinations).toEqual([{
      destination: "mx1.dest.test", connections: 2, window: 2, max_window: 5, rate: { count: 150, per_ms: 60_000 },
      state: "backing_off", backoff_until: new Date(time + 60_000).toISOString(), dead_until: null, consecutive_failures: 0,
    }]);
  });

  test("ignores a stale snapshot left by a server that is no longer running", () => {
    writeFileSync(throttleFile(), JSON.stringify(snapshot(Date.now() - 10 * MIN)));
    expect(outpost("queue", "list").out).not.toContain("connections in use");
    expect((JSON.parse(outpost("queue", "list", "--json").out) as ListJson).throttle).toBeNull();
    rmSync(throttleFile());
  });
});

describe("outpost queue list --limit", () => {
  test("stops after N messages and says how many more there are; the totals stay whole", () => {
    const r = outpost("queue", "list", "--limit", "1");
    expect(r.code).toBe(0);
    expect(r.out).toContain("slow@dest.test");
    expect(r.out).not.toContain("bob@other.test");
    const lines = r.out.trimEnd().split("\n");
    expect(lines.at(-2)).toBe("… and 1 more message (1 recipient) not shown; --limit 0 lists all");
    expect(lines.at(-1)).toBe("-- 2 messages, 2 recipients pending");
    const doc = JSON.parse(outpost("queue", "list", "--json", "--limit=1").out) as ListJson;
    expect(doc.messages.map((m) => m.id)).toEqual([fx.deferredMsg]);
    expect(doc).toMatchObject({ more: 1, total: { messages: 2, recipients: 2 } });
  });

  test("a limit that is not a whole number, or on another subcommand, is a usage error", () => {
    for (const bad of [["list", "--limit", "ten"], ["list", "--limit", "-1"], ["flush", "--limit", "5"]]) {
      expect(outpost("queue", ...bad).code).toBe(2);
    }
  });
});

describe("outpost queue list on a long queue", () => {
  const MESSAGES = 25_000; // two pending recipients each: 50,000 rows

  /** Bulk rows straight into the tables: going through Enqueuer would take minutes for this many. */
  function fillQueue(): void {
    withStore((s) => s.sqlite.transaction(() => {
      const now = Date.now();
      s.sqlite.run(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO messages (id, created_at, envelope_from, size, body, source) SELECT printf('bulk%06d', i), ?2 + i, 'bulk@example.org', 100, x'00', 'api' FROM n`,
        [MESSAGES, now - 60 * MIN],
      );
      s.sqlite.run(
        `INSERT INTO recipients (id, message_id, address, domain, status, next_attempt_at, updated_at)
         SELECT 'r' || id || '-' || k, id, 'user' || k || '@bulk.test', 'bulk.test', 'queued', ?1, ?1
         FROM messages, (SELECT 1 AS k UNION ALL SELECT 2) WHERE id LIKE 'bulk%'`,
        [now],
      );
    })());
  }

  test("prints a bounded page by default, all with --limit 0, and the right totals either way", () => {
    fillQueue();
    const total = `-- ${MESSAGES + 2} messages, ${2 * MESSAGES + 2} recipients pending`;
    const page = outpost("queue", "list");
    expect(page.code).toBe(0);
    const pageLines = page.out.trimEnd().split("\n");
    expect(pageLines.filter((l) => l.includes("@bulk.test"))).toHaveLength(2 * 998); // 1000 messages; 2 are the fixture's
    expect(pageLines.at(-2)).toBe(`… and ${MESSAGES - 998} more messages (${2 * (MESSAGES - 998)} recipients) not shown; --limit 0 lists all`);
    expect(pageLines.at(-1)).toBe(total);

    const all = outpost("queue", "list", "--limit", "0");
    expect(all.code).toBe(0);
    const lines = all.out.trimEnd().split("\n");
    expect(lines.filter((l) => l.includes("@bulk.test"))).toHaveLength(2 * MESSAGES);
    expect(lines.at(-1)).toBe(total);
    // widths come from the first rows, so rows far down still line up under the header
    const col = lines[0]!.indexOf("RECIPIENT");
    expect(lines.at(-2)!.slice(col)).toStartWith("user2@bulk.test");

    const doc = JSON.parse(outpost("queue", "list", "--json").out) as ListJson;
    expect(doc.messages).toHaveLength(MESSAGES + 2);
    expect(doc.messages.at(-1)!.recipients.map((r) => r.address)).toEqual(["user1@bulk.test", "user2@bulk.test"]);
    expect(doc.total).toEqual({ messages: MESSAGES + 2, recipients: 2 * MESSAGES + 2, held: 0 });
  });

  test("a reader that stops early (| head) ends the listing quietly with exit 0, as mailq does", () => {
    fillQueue(); // far more than a pipe holds
    const main = join(import.meta.dir, "../../src/main.ts");
    for (const args of ["queue list --limit 0", "queue list --json"]) {
      const p = Bun.spawnSync(["bash", "-c", `bun ${main} ${args} --config ${configFile} | head -1 >/dev/null; echo "\${PIPESTATUS[0]}"`], {
        cwd: dir.path, env: { ...process.env, OUTPOST_LOG: "error" }, timeout: 20_000,
      });
      expect({ args, status: p.stdout.toString().trim(), err: p.stderr.toString() }).toEqual({ args, status: "0", err: "" });
    }
  });
});

describe("outpost queue show", () => {
  test("prints the message's details and all its recipients, delivered ones included", () => {
    const r = outpost("queue", "show", fx.deferredMsg);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^id:\s+\S+/m);
    expect(r.out).toMatch(/sender:\s+alice@example.org/);
    expect(r.out).toMatch(/^user:\s+alice$/m);
    expect(r.out).toMatch(/subject:\s+one/);
    expect(r.out).toMatch(/slow@dest.test\s+r\S+\s+deferred\s+1/);
    expect(r.out).toMatch(/fast@dest.test\s+r\S+\s+delivered\s+1\s+-\s+mx1.dest.test\s+250 ok/);
  });

  test("--json prints the message as JSON", () => {
    const m = JSON.parse(outpost("queue", "show", fx.doneMsg, "--json").out);
    expect(m).toMatchObject({ id: fx.doneMsg, envelope: "carol@example.org", subject: "three", user: null });
    expect(m.recipients[0]).toMatchObject({ address: "x@dest.test", status: "delivered", next_attempt_at: null });
  });

  test("exits 1 with a message for an unknown id", () => {
    const r = outpost("queue", "show", "nosuchmessage");
    expect(r.code).toBe(1);
    expect(r.err).toContain("no message nosuchmessage in the queue");
  });
});

describe("outpost queue retry and flush", () => {
  test("retry ID makes the message's deferred recipients due now", () => {
    const before = Date.now();
    const r = outpost("queue", "retry", fx.deferredMsg);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${fx.deferredMsg}: 1 recipient of 1 message scheduled for immediate delivery\n`);
    const row = rcpt(fx.deferredRcpt)!;
    expect(row.status).toBe("deferred");
    expect(row.next_attempt_at).toBeGreaterThanOrEqual(before);
    expect(row.next_attempt_at).toBeLessThanOrEqual(Date.now());
  });

  test("retry --all and flush make every waiting recipient due now", () => {
    expect(outpost("queue", "retry", "--all").out).toBe("1 recipient of 1 message scheduled for immediate delivery\n");
    expect(rcpt(fx.deferredRcpt)!.next_attempt_at).toBeLessThanOrEqual(Date.now());
    expect(outpost("queue", "flush").out).toBe("0 recipients of 0 messages scheduled for immediate delivery\n");
  });

  test("--json prints each result as JSON", () => {
    expect(JSON.parse(outpost("queue", "retry", fx.deferredMsg, "--json").out)).toEqual({ id: fx.deferredMsg, action: "retry", messages: 1, recipients: 1, in_flight: 0 });
    expect(JSON.parse(outpost("queue", "retry", "--all", "--json").out)).toEqual({ action: "retry", messages: 0, recipients: 0, in_flight: 0 });
    expect(JSON.parse(outpost("queue", "flush", "--json").out)).toEqual({ action: "flush", messages: 0, recipients: 0, in_flight: 0 });
    expect(JSON.parse(outpost("queue", "delete", fx.freshMsg, "--json").out)).toEqual({ id: fx.freshMsg, action: "delete", messages: 1, recipients: 1, messages_deleted: 1 });
    const r = outpost("queue", "delete", fx.freshMsg, "--json");
    expect(r.code).toBe(1);
    expect(r.out).toBe("");
  });

  test("retry of an unknown id exits 1; retry without an id is a usage error", () => {
    expect(outpost("queue", "retry", "nosuchmessage").code).toBe(1);
    const r = outpost("queue", "retry");
    expect(r.code).toBe(2);
    expect(r.err).toContain("queue retry needs a message id, a recipient id, or --all");
  });
});

describe("outpost queue delete", () => {
  test("removes the message and its recipients and keeps earlier events", () => {
    const r = outpost("queue", "delete", fx.deferredMsg);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`${fx.deferredMsg}: deleted with its 2 recipients\n`);
    expect(rcpt(fx.deferredRcpt)).toBeNull();
    expect(outpost("queue", "show", fx.deferredMsg).code).toBe(1);
    const events = withStore((s) => s.sqlite.query("SELECT count(*) AS n FROM events WHERE message_id = ?").get(fx.deferredMsg) as { n: number });
    expect(events.n).toBeGreaterThan(0);
  });

  test("exits 1 with a message for an unknown id", () => {
    const r = outpost("queue", "delete", "nosuchmessage");
    expect(r.code).toBe(1);
    expect(r.err).toBe("outpost: no message or recipient nosuchmessage in the queue\n");
  });
});

describe("outpost queue usage", () => {
  test("--help prints usage; an unknown subcommand is a usage error", () => {
    expect(outpost("queue", "--help").out).toContain("outpost queue list");
    const r = outpost("queue", "frob");
    expect(r.code).toBe(2);
    expect(r.err).toContain("unknown command queue frob");
  });

  test("the top-level usage lists the queue command", () => {
    expect(outpost("--help").out).toContain("queue list|show|retry|delete");
  });
});

const statuses = () =>
  withStore((s) => Object.fromEntries(
    (s.sqlite.query("SELECT address, status FROM recipients ORDER BY address").all() as { address: string; status: string }[]).map((r) => [r.address, r.status]),
  ));

describe("outpost queue hold and release", () => {
  test("hold ID holds the message's waiting recipients; list and show say held, with no next attempt", () => {
    const r = outpost("queue", "hold", fx.deferredMsg);
    expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: `${fx.deferredMsg}: 1 recipient of 1 message held\n` });
    expect(statuses()).toMatchObject({ "slow@dest.test": "held", "fast@dest.test": "delivered", "bob@other.test": "queued" });
    const list = outpost("queue", "list").out.trimEnd().split("\n");
    expect(list.find((l) => l.includes("slow@dest.test"))).toMatch(/held\s+1\s+on hold\s+451 4\.7\.1/);
    expect(list.at(-1)).toBe("-- 2 messages, 2 recipients pending (1 held)");
    expect(outpost("queue", "show", fx.deferredMsg).out).toMatch(/slow@dest.test\s+r\S+\s+held\s+1\s+on hold/);
    const doc = JSON.parse(outpost("queue", "list", "--json").out) as ListJson;
    expect(doc.total).toEqual({ messages: 2, recipients: 2, held: 1 });
    // JSON speaks the API's statuses: held is deferred with held set
    expect(doc.messages[0]!.recipients[0]).toMatchObject({ status: "deferred", held: true, next_attempt_at: null });
  });

  test("release ID puts held recipients back, due now: deferred if tried before, queued if not", () => {
    outpost("queue", "hold", "--all");
    const before = Date.now();
    const r = outpost("queue", "release", fx.deferredMsg);
    expect(r.out).toBe(`${fx.deferredMsg}: 1 recipient of 1 message released for immediate delivery\n`);
    expect(rcpt(fx.deferredRcpt)!.status).toBe("deferred");
    expect(rcpt(fx.deferredRcpt)!.next_attempt_at).toBeGreaterThanOrEqual(before);
    expect(rcpt(fx.deferredRcpt)!.next_attempt_at).toBeLessThanOrEqual(Date.now());
    expect(outpost("queue", "release", "--all").out).toBe("1 recipient of 1 message released for immediate delivery\n");
    expect(statuses()["bob@other.test"]).toBe("queued");
  });

  test("a recipient id acts on that recipient only", () => {
    const bob = withStore((s) => (s.sqlite.query("SELECT id FROM recipients WHERE address = 'bob@other.test'").get() as { id: string }).id);
    expect(outpost("queue", "hold", bob).out).toBe(`${bob}: 1 recipient of 1 message held\n`);
    expect(statuses()).toMatchObject({ "bob@other.test": "held", "slow@dest.test": "deferred" });
    expect(outpost("queue", "delete", bob).out).toBe(`${bob}: 1 recipient of 1 message deleted; 1 message removed with its last recipient\n`);
    expect(outpost("queue", "show", fx.freshMsg).code).toBe(1);
  });

  test("hold, release, retry and delete --all: each filter narrows the recipients it acts on", () => {
    const n = (...args: string[]) => (JSON.parse(outpost("queue", ...args, "--json").out) as { recipients: number }).recipients;
    // --sender: an address, @domain, or <> for the null sender
    expect(n("hold", "--all", "--sender", "ALICE@example.org")).toBe(1);
    expect(n("release", "--all", "--sender", '"alice"@Example.ORG')).toBe(1); // any spelling of the mailbox
    expect(n("hold", "--all", "--sender", "ALICE@example.org")).toBe(1);
    expect(n("release", "--all", "--sender", "@example.org")).toBe(1);
    expect(n("hold", "--all", "--sender", "<>")).toBe(1);
    expect(statuses()).toMatchObject({ "bob@other.test": "held", "slow@dest.test": "deferred" });
    // --domain (the recipient's)
    expect(n("release", "--all", "--domain", "dest.test")).toBe(0);
    expect(n("release", "--all", "--domain", "OTHER.test")).toBe(1);
    // --status
    expect(n("hold", "--all", "--status", "queued")).toBe(1);
    expect(statuses()).toMatchObject({ "bob@other.test": "held", "slow@dest.test": "deferred" });
    expect(n("delete", "--all", "--status", "deferred")).toBe(1);
    expect(statuses()).toEqual({ "bob@other.test": "held", "fast@dest.test": "delivered", "x@dest.test": "delivered" });
    // --older-than: the fixture's messages were queued 2 h ago
    expect(n("release", "--all", "--older-than", "3h")).toBe(0);
    expect(n("release", "--all", "--older-than", "1h30m")).toBe(1);
    // retry --all with filters
    withStore((s) => s.sqlite.run("UPDATE recipients SET next_attempt_at = ? WHERE address = 'bob@other.test'", [Date.now() + 3_600_000]));
    expect(n("retry", "--all", "--domain", "dest.test")).toBe(0);
    expect(n("retry", "--all", "--sender", "<>", "--status", "queued", "--older-than", "1h")).toBe(1);
    // delete --all with no filter: every open recipient; messages left with none go too
    const del = JSON.parse(outpost("queue", "delete", "--all", "--json").out);
    expect(del).toEqual({ action: "delete", messages: 1, recipients: 1, messages_deleted: 1 });
    expect(statuses()).toEqual({ "fast@dest.test": "delivered", "x@dest.test": "delivered" });
    expect(outpost("queue", "list").out.trim()).toBe("queue is empty");
  });

  test("--domain and --sender take domains as written by people: any case, Unicode (IDNA)", async () => {
    const store = openStore(loadConfig(configFile).database.path);
    await new Enqueuer(store.sqlite, new EventRecorder(store.sqlite)).enqueue({
      userId: null, envelopeFrom: "shop@xn--caf-dma.example", recipients: ["kunde@xn--bcher-kva.example"], suppressed: new Set(),
      body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "api",
      options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
    });
    store.close();
    expect(outpost("queue", "hold", "--all", "--domain", "Bücher.Example").out).toBe("1 recipient of 1 message held\n");
    expect(outpost("queue", "release", "--all", "--sender", "SHOP@café.example").out).toBe("1 recipient of 1 message released for immediate delivery\n");
  });

  test("mistakes are usage errors (exit 2) that name the flag, and change nothing", () => {
    const cases: [string[], string][] = [
      [["hold", fx.deferredMsg, "--domain", "dest.test"], "--domain narrows --all"],
      [["delete", "--sender", "a@b.test"], "--sender narrows --all"],
      [["release", fx.deferredMsg, "--all"], "not both"],
      [["hold"], "needs a message id, a recipient id, or --all"],
      [["hold", "--all", "--status", "bounced"], '--status must be one of queued, deferred, held, not "bounced"'],
      [["hold", "--all", "--status", "held"], "--status held: queue hold acts on queued and deferred recipients only"],
      [["release", "--all", "--status", "deferred"], "--status deferred: queue release acts on held recipients only"],
      [["retry", "--all", "--status", "held"], "--status held: queue retry acts on queued and deferred"],
      [["delete", "--all", "--older-than", "5 days"], "--older-than: expected a duration"],
      [["delete", "--all", "--domain", "not a domain"], '--domain: "not a domain" is not a domain'],
      [["delete", "--all", "--sender", "@a@b.test"], '--sender: "a@b.test" is not a domain'],
      [["delete", "--all", "--sender", "nobody"], "--sender: expected an address, @domain or <>"],
      [["flush", "--all"], "queue flush takes no --all"],
      [["list", "--all"], "--all applies to queue retry|hold|release|delete only"],
      [["list", "--domain", "x.test"], "--domain applies to queue retry|hold|release|delete only"],
      [["show", fx.deferredMsg, "--headers", "--json"], "--headers prints the stored message as it is"],
      [["list", "--body"], "--body applies to queue show only"],
    ];
    for (const [args, message] of cases) {
      const r = outpost("queue", ...args);
      expect({ args, code: r.code, out: r.out, err: r.err }).toMatchObject({ args, code: 2, out: "" });
      expect(r.err).toContain(message);
    }
    expect(statuses()).toMatchObject({ "slow@dest.test": "deferred", "bob@other.test": "queued" });
  });

  test("an unknown id exits 1", () => {
    for (const action of ["retry", "hold", "release", "delete"]) {
      const r = outpost("queue", action, "nosuchid");
      expect({ code: r.code, out: r.out, err: r.err }).toEqual({ code: 1, out: "", err: "outpost: no message or recipient nosuchid in the queue\n" });
    }
  });
});

describe("the log line of a queue change", () => {
  /** Runs with info logs on, as a production config would. */
  function logged(...args: string[]): { out: string; lines: Record<string, unknown>[] } {
    const main = join(import.meta.dir, "../../src/main.ts");
    const p = Bun.spawnSync(["bun", main, ...args, "--config", configFile], {
      cwd: dir.path, env: { ...process.env, OUTPOST_LOG: "info", SUDO_USER: "" }, timeout: 10_000,
    });
    expect(p.exitCode).toBe(0);
    return { out: p.stdout.toString(), lines: p.stderr.toString().trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) };
  }

  test("names the operator, the command line, the message, its owner by name and the recipients changed, on stderr", () => {
    const { out, lines } = logged("queue", "hold", "--all", "--sender", "@example.org", "--json");
    expect(JSON.parse(out)).toMatchObject({ action: "hold", recipients: 1 }); // stdout stays one JSON document
    expect(lines).toHaveLength(1);
    expect(lines[0]).toEqual({
      time: expect.any(String), level: "info", event: "queue_hold",
      queue_id: fx.deferredMsg, user: "alice",
      recipients: [{ id: fx.deferredRcpt, address: "slow@dest.test" }],
      argv: ["outpost", "queue", "hold", "--all", "--sender", "@example.org", "--json", "--config", configFile],
      operator: Bun.spawnSync(["id", "-un"]).stdout.toString().trim(), // by name, from the passwd database
    });
    expect(lines[0]!.operator).not.toMatch(/^(uid |unknown$)/);
  });

  test("with sudo, the log also names who ran sudo", () => {
    const main = join(import.meta.dir, "../../src/main.ts");
    const p = Bun.spawnSync(["bun", main, "queue", "hold", fx.freshMsg, "--config", configFile], {
      cwd: dir.path, env: { ...process.env, OUTPOST_LOG: "info", SUDO_USER: "carol" }, timeout: 10_000,
    });
    expect(JSON.parse(p.stderr.toString())).toMatchObject({ event: "queue_hold", queue_id: fx.freshMsg, sudo_user: "carol" });
  });

  test("one line per message for release, retry and delete; a message without owner logs user null", () => {
    logged("queue", "hold", "--all");
    const released = logged("queue", "release", "--all").lines;
    expect(released.map((l) => [l.event, l.queue_id, l.user])).toEqual([
      ["queue_release", fx.deferredMsg, "alice"],
      ["queue_release", fx.freshMsg, null],
    ]);
    withStore((s) => s.sqlite.run("UPDATE recipients SET next_attempt_at = ? WHERE status IN ('queued','deferred')", [Date.now() + 3_600_000]));
    expect(logged("queue", "retry", fx.freshMsg).lines).toMatchObject([{ event: "queue_retry", queue_id: fx.freshMsg, recipients: [{ address: "bob@other.test" }] }]);
    const deleted = logged("queue", "delete", fx.deferredMsg).lines;
    expect(deleted).toMatchObject([{ event: "queue_delete", queue_id: fx.deferredMsg, user: "alice", message_deleted: true }]);
    expect((deleted[0]!.recipients as { address: string }[]).map((r) => r.address)).toEqual(["slow@dest.test", "fast@dest.test"]);
  });

  test("a command that changes nothing logs nothing", () => {
    expect(logged("queue", "release", "--all").lines).toEqual([]);
  });
});

describe("outpost queue show --headers / --body", () => {
  /** stdout as bytes: the stored message is not necessarily UTF-8. */
  function rawOut(...args: string[]): { code: number | null; out: Buffer } {
    const main = join(import.meta.dir, "../../src/main.ts");
    const p = Bun.spawnSync(["bun", main, "queue", "show", ...args, "--config", configFile], { cwd: dir.path, env: { ...process.env, OUTPOST_LOG: "error" }, timeout: 10_000 });
    return { code: p.exitCode, out: p.stdout };
  }

  test("print the stored header block and body, byte for byte (like postcat -hq / -bq)", async () => {
    const head = "From: a@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nX-Folded: one\r\n two\r\n";
    const body = Buffer.concat([Buffer.from("caf"), Buffer.from([0xe9]), Buffer.from(" latin-1\r\n\r\n.dot\r\nno final newline")]);
    const stored = Buffer.concat([Buffer.from(head + "\r\n"), body]);
    const store = openStore(loadConfig(configFile).database.path);
    const { id } = await new Enqueuer(store.sqlite, new EventRecorder(store.sqlite)).enqueue({
      userId: null, envelopeFrom: "a@example.org", recipients: ["r@dest.test"], suppressed: new Set(), body: stored, subject: "café", source: "smtp",
      options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
    });
    store.close();
    const headers = rawOut(id, "--headers");
    expect(headers.code).toBe(0);
    expect(headers.out.equals(Buffer.from(head))).toBe(true);
    expect(rawOut(id, "--body").out.equals(body)).toBe(true);
    expect(rawOut(id, "--headers", "--body").out.equals(stored)).toBe(true);
    expect(rawOut("nosuchmessage", "--body")).toEqual({ code: 1, out: Buffer.alloc(0) });
  });
});
