/**
 * Every statement the delivery loop and the queue prepare or run while mail is delivered, deferred and bounced
 * (claims with and without excluded domains, settles, DSNs, lease recovery, the queue gauges) is planned against
 * a queue of 200,000 pending recipients with real statistics: none may read the recipients or messages table
 * from end to end. A full scan there is what makes a big backlog slow down every round of the scheduler.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../../src/db/client.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

/** SQL text by where it was prepared: only statements whose stack passes through src/delivery or src/queue. */
const seen = new Map<string, string>();
const OURS = /src\/(delivery|queue)\/[\w-]+\.ts/;

function record(sql: unknown): void {
  if (typeof sql !== "string") return;
  const at = new Error().stack?.match(OURS)?.[0];
  if (at && /\b(recipients|messages)\b/.test(sql)) seen.set(sql, at);
}

// bun:sqlite prepares through these three; wrapping the prototype sees every statement, wherever it is made
const proto = Database.prototype as unknown as Record<"query" | "prepare" | "run", (this: Database, sql: string, ...rest: unknown[]) => unknown>;
const originals = { query: proto.query, prepare: proto.prepare, run: proto.run };
for (const name of ["query", "prepare", "run"] as const) {
  const original = originals[name];
  proto[name] = function (this: Database, sql: string, ...rest: unknown[]) {
    record(sql);
    return original.call(this, sql, ...rest);
  };
}

let rt: Runtime | null = null;
let mx: FakeMx | null = null;
let dir: ReturnType<typeof tempDir>;
let big: Store;

beforeAll(async () => {
  dir = tempDir();
  mx = await startFakeMx({ host: "127.0.0.2", rcpt: { "later@defer.test": "451 4.2.0 try later", "gone@bounce.test": "550 5.1.1 no such user" } });
  const config = testConfig(dir.path, `[delivery]\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n`);
  rt = (await startRuntime(config)).rt;
  const r = rt;
  await r.intake.accept({
    userId: null, allowedDomains: null, envelopeFrom: "app@example.com", source: "api",
    recipients: ["ok@ok.test", "later@defer.test", "gone@bounce.test"],
    raw: Buffer.from("From: app@example.com\r\nTo: ok@ok.test\r\nSubject: plans\r\n\r\nHello\r\n"),
  });
  const left = () => r.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE status = 'queued' OR lease_until IS NOT NULL").get() as { n: number };
  await waitFor(() => left().n === 0, 10_000, "every recipient settled");
  await rt.stop();
  rt = null;
  for (const [name, original] of Object.entries(originals)) proto[name as keyof typeof originals] = original;

  big = openStore(join(dir.path, "big.db"));
  // 20,000 messages of 10 recipients over 10 domains: a backlog (queued, deferred), some history, a few held
  big.sqlite.run(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
    INSERT INTO messages (id, created_at, envelope_from, size, body, source) SELECT 'm' || i, i, 's@x.test', 1, x'00', 'smtp' FROM n`);
  big.sqlite.run(`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199999)
    INSERT INTO recipients (id, message_id, address, address_key, domain, status, attempts, next_attempt_at, updated_at)
    SELECT 'r' || i, 'm' || (i / 10), 'u' || i || '@d' || (i % 10) || '.test', 'u' || i || '@d' || (i % 10) || '.test', 'd' || (i % 10) || '.test',
      CASE WHEN i % 20 = 0 THEN 'delivered' WHEN i % 101 = 0 THEN 'held' WHEN i % 2 = 0 THEN 'deferred' ELSE 'queued' END, 0, i, 0 FROM n`);
  big.sqlite.run("ANALYZE");
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await mx?.stop();
  big?.close();
  dir.cleanup();
});

describe("query plans of the delivery loop and the queue with a big backlog", () => {
  test("the run prepared the claim's, the settle's and lease recovery's statements", () => {
    const places = new Set(seen.values());
    for (const file of ["src/queue/claim.ts", "src/queue/settle.ts", "src/queue/enqueue.ts", "src/queue/expire.ts"]) expect(places).toContain(file);
    expect([...seen.keys()].some((sql) => sql.includes("recipients_domain"))).toBe(true);
  });

  test("the look for expired mail at failing destinations is one range over recipients_pending_message", () => {
    const sql = [...seen].find(([q, at]) => at === "src/queue/expire.ts" && q.includes("recipients_pending_message"))?.[0];
    expect(sql).toBeDefined();
    const plan = (big.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail);
    expect(plan).toContainEqual(expect.stringMatching(/^SEARCH recipients USING INDEX recipients_pending_message \(message_id<\?\)/));
    expect(plan.filter((d) => /^SCAN (recipients|messages)\b/.test(d))).toEqual([]);
  });

  test("no statement reads the recipients or messages table without an index", () => {
    const scans: string[] = [];
    for (const [sql, at] of seen) {
      const plan = (big.sqlite.query(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail);
      // a subquery's rows are read by its alias too ("SCAN r"): only a table's alias is a table scan
      const subqueries = new Set(plan.map((d) => /^(?:CO-ROUTINE|MATERIALIZE) (\w+)/.exec(d)?.[1]).filter((n) => n !== undefined));
      for (const step of plan) {
        const table = /^SCAN (recipients|messages|r|m)\b/.exec(step)?.[1];
        if (table && !subqueries.has(table) && !/USING (COVERING )?INDEX/.test(step)) scans.push(`${at}: ${step} ← ${sql.replace(/\s+/g, " ")}`);
      }
    }
    expect(scans).toEqual([]);
  });
});
