/** The one door: policy, suppression, preparation and the durable enqueue, against a real SQLite file. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { addSuppression } from "../suppression/list.ts";
import { startRuntime, tempDir, testConfig } from "../../test/helpers/harness.ts";
import type { Runtime } from "../runtime/start.ts";
import { IntakeError } from "./policy.ts";

let dir: ReturnType<typeof tempDir>;
let rt: Runtime;

const MIME = (extra = "") =>
  Buffer.from(`From: app@example.com\r\nTo: a@dest.test\r\nSubject: =?utf-8?B?SMOpbGxv?=\r\n${extra}\r\n<p>hi</p>\r\n`);

beforeEach(async () => {
  dir = tempDir();
  const config = testConfig(
    dir.path,
    `[smtp]\nlisten = []\nmax_recipients = 3\nmax_message_size = 2000\nmax_hops = 3\n[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\nconcurrency = 1\n[tracking]\nopens = true\n`,
  );
  rt = (await startRuntime(config)).rt;
  // these tests look at rows as intake left them: keep delivery from picking them up
  for (const s of rt.services.filter((s) => s.name !== "smtp" && s.name !== "http")) await s.stop();
});
afterEach(async () => {
  await rt.stop();
  dir.cleanup();
});

const submit = (over: Partial<Parameters<Runtime["intake"]["accept"]>[0]> = {}) =>
  rt.intake.accept({ userId: null, allowedDomains: null, envelopeFrom: "app@example.com", recipients: ["a@dest.test"], raw: MIME(), source: "smtp", ...over });

function readOnly() {
  return new Database(rt.config.database.path, { readonly: true });
}

describe("intake.accept", () => {
  test("stores the message once and a row and a queued event per recipient, after the commit", async () => {
    const res = await submit({ recipients: ["a@dest.test", "B@Other.test"] });
    expect(res.recipients.map((r) => r.status)).toEqual(["queued", "queued"]);
    const db = readOnly();
    const msg = db.query("SELECT subject, envelope_from, track_opens FROM messages WHERE id = ?").get(res.id);
    expect(msg).toEqual({ subject: "Héllo", envelope_from: "app@example.com", track_opens: 1 });
    const rows = db.query("SELECT address, domain, status FROM recipients WHERE message_id = ? ORDER BY address").all(res.id);
    expect(rows).toEqual([
      { address: "B@other.test", domain: "other.test", status: "queued" },
      { address: "a@dest.test", domain: "dest.test", status: "queued" },
    ]);
    expect(db.query("SELECT count(*) AS n FROM events WHERE message_id = ? AND type = 'queued'").get(res.id)).toEqual({ n: 2 });
    db.close();
  });

  test("stores addresses in canonical form, one recipient per mailbox however often it is spelt", async () => {
    const res = await submit({
      envelopeFrom: '"app"@Example.COM',
      recipients: ["foo@bücher.example", '"FOO"@XN--BCHER-KVA.EXAMPLE', "Foo@xn--bcher-kva.example", "b@dest.test"],
    });
    expect(res.recipients.map((r) => r.address)).toEqual(["foo@xn--bcher-kva.example", "b@dest.test"]);
    const db = readOnly();
    expect(db.query("SELECT envelope_from FROM messages WHERE id = ?").get(res.id)).toEqual({ envelope_from: "app@example.com" });
    db.close();
  });

  test("a suppressed address is recorded as suppressed, not queued", async () => {
    addSuppression(rt.store.db, null, "a@dest.test");
    const res = await submit({ recipients: ["A@dest.test", "c@dest.test"] });
    expect(res.recipients.map((r) => [r.address, r.status])).toEqual([
      ["A@dest.test", "suppressed"],
      ["c@dest.test", "queued"],
    ]);
  });

  test("X-Outpost-* headers set the options and are removed; explicit options win", async () => {
    const res = await submit({ raw: MIME("X-Outpost-Track-Opens: no\r\nX-Outpost-Track-Clicks: yes\r\nBcc: hidden@x.test\r\n"), options: { inlineCss: true } });
    const db = readOnly();
    const row = db.query("SELECT body, track_opens, track_clicks, inline_css FROM messages WHERE id = ?").get(res.id) as {
      body: Uint8Array; track_opens: number; track_clicks: number; inline_css: number;
    };
    db.close();
    expect([row.track_opens, row.track_clicks, row.inline_css]).toEqual([0, 1, 1]);
    const body = Buffer.from(row.body).toString();
    expect(body).not.toMatch(/X-Outpost|Bcc:/i);
    expect(body).toMatch(/^Message-ID: <.+@outpost\.test>\r$/m);
    expect(body).toMatch(/^Date: /m);
  });

  test("policy refusals carry both their SMTP and HTTP meaning", async () => {
    const cases: [Parameters<typeof submit>[0], number, string, number][] = [
      [{ recipients: ["a@x.test", "b@x.test", "c@x.test", "d@x.test"] }, 452, "4.5.3", 400],
      [{ raw: Buffer.alloc(3000, "a") }, 552, "5.3.4", 413],
      [{ allowedDomains: ["other.com"] }, 553, "5.7.1", 403],
      [{ raw: Buffer.from("Subject: x\r\n\r\nnul\0here") }, 554, "5.6.0", 400],
      // an address literal, whichever door: the API, SMTP, a DSN to such an envelope sender
      [{ recipients: ["a@x.test", "admin@[10.0.0.1]"] }, 553, "5.1.2", 400],
      [{ recipients: ["root@[IPv6:::1]"], source: "dsn", envelopeFrom: "" }, 553, "5.1.2", 400],
    ];
    for (const [over, code, enhanced, http] of cases) {
      const err = await submit(over).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IntakeError);
      expect([(err as IntakeError).code, (err as IntakeError).enhanced, (err as IntakeError).httpStatus]).toEqual([code, enhanced, http]);
    }
  });

  test("more than max_hops Received fields, our trace line included, is refused with 554 5.4.6 (400 naming body)", async () => {
    const received = (n: number) => Array.from({ length: n }, (_, i) => `Received: from hop${i}.test by relay${i}.test; Mon, 1 Jan 2024 00:00:0${i} +0000\r\n`).join("");
    const trace = Buffer.from("Received: from client.test ([127.0.0.1]) by outpost.test with ESMTP; Mon, 1 Jan 2024 00:00:09 +0000\r\n");
    const raw = (n: number) => Buffer.concat([Buffer.from(received(n)), MIME()]);
    // two hops before us plus our own line is three: at the limit, accepted
    expect((await submit({ raw: raw(2), trace })).recipients[0]!.status).toBe("queued");
    const err = (await submit({ raw: raw(3), trace }).catch((e: unknown) => e)) as IntakeError;
    expect(err).toBeInstanceOf(IntakeError);
    expect(err.toString()).toBe("554 5.4.6 Too many hops (4 Received header fields, at most 3)");
    expect([err.httpStatus, err.field]).toEqual([400, "body"]);
    // mail we generate ourselves (a DSN, inside a settle's transaction) meets the same limit
    const dsn = { userId: null, allowedDomains: null, envelopeFrom: "", recipients: ["a@dest.test"], source: "dsn" as const };
    const tx = (raw: Buffer) => rt.store.sqlite.transaction(() => rt.intake.acceptNow({ ...dsn, raw }))();
    expect(tx(raw(3)).recipients[0]!.status).toBe("queued");
    expect(() => tx(raw(4))).toThrow("Too many hops");
  });

  test("Received lines in the body or in an attached message are no hops of this one", async () => {
    const many = "Received: from a.test by b.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n".repeat(10);
    const res = await submit({ raw: Buffer.concat([MIME(), Buffer.from(`\r\n--- forwarded ---\r\n${many}`)]) });
    expect(res.recipients[0]!.status).toBe("queued");
  });

  test("many submissions at once are all committed, each with its own id, sharing commits (group commit)", async () => {
    // count top-level transactions: each one is a commit (and an fsync), which group commit exists to share
    const sqlite = rt.store.sqlite;
    const realTransaction = sqlite.transaction.bind(sqlite);
    let commits = 0;
    sqlite.transaction = ((fn: Parameters<typeof realTransaction>[0]) => {
      const tx = realTransaction(fn);
      return Object.assign((...args: unknown[]) => (sqlite.inTransaction ? tx(...args) : (commits++, tx(...args))), tx);
    }) as typeof sqlite.transaction;
    let results: Awaited<ReturnType<typeof submit>>[];
    try {
      results = await Promise.all(Array.from({ length: 200 }, (_, i) => submit({ recipients: [`r${i}@dest.test`] })));
    } finally {
      sqlite.transaction = realTransaction;
    }
    expect(commits).toBeGreaterThanOrEqual(1);
    expect(commits).toBeLessThanOrEqual(20); // one commit per message would be 200
    expect(new Set(results.map((r) => r.id)).size).toBe(200);
    const db = readOnly();
    expect(db.query("SELECT count(*) AS n FROM messages").get()).toEqual({ n: 200 });
    db.close();
  });

  test("a failed commit rejects with a temporary error and stores nothing", async () => {
    rt.store.sqlite.exec("CREATE TRIGGER fail_insert BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk trouble'); END");
    const err = await submit().catch((e: unknown) => e);
    expect((err as IntakeError).code).toBe(451);
    expect(rt.store.sqlite.query("SELECT count(*) AS n FROM recipients").get()).toEqual({ n: 0 });
  });
});
