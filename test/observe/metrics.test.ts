/**
 * GET /metrics as Prometheus scrapes it: parsed by a standard parser (parse-prometheus-text-format), scraped before
 * and after real mail goes through SMTP and the API to a scripted MX on 127.0.0.2, the token rule, and the plans of
 * the queries the queue gauges run at each scrape.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import pkg from "../../package.json";
import { createKey } from "../../src/auth/keys.ts";
import { addUser } from "../../src/auth/users.ts";
import { QUEUE_GAUGE_QUERIES } from "../../src/queue/metrics.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { startApi } from "../api/fixture.ts";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

/** One scrape: every sample by `name{label="value",…}` (labels sorted), histograms as _count/_sum/_bucket. */
type Scrape = Map<string, number>;

function parse(text: string): { families: ReturnType<typeof parsePrometheusTextFormat>; samples: Scrape } {
  const families = parsePrometheusTextFormat(text);
  const samples: Scrape = new Map();
  const key = (name: string, labels: Record<string, string> = {}) => {
    const l = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}="${v}"`).join(",");
    return l ? `${name}{${l}}` : name;
  };
  for (const f of families) {
    for (const m of f.metrics) {
      if (f.type === "HISTOGRAM") {
        samples.set(key(`${f.name}_count`, m.labels), Number(m.count));
        samples.set(key(`${f.name}_sum`, m.labels), Number(m.sum));
      } else samples.set(key(f.name, m.labels), Number(m.value));
    }
  }
  return { families, samples };
}

let mx: FakeMx;
let rt: Runtime;
let dir: ReturnType<typeof tempDir>;
let base: string;
let apiKey: string;
let smtpPort: number;

beforeAll(async () => {
  mx = await startFakeMx({ host: "127.0.0.2", rcpt: { "bad@dest.test": "550 5.1.1 no such user" } });
  dir = tempDir("outpost-metrics-");
  const config = testConfig(dir.path, [
    `[http]`, `listen = "127.0.0.1:0"`,
    `[delivery]`, `retry = ["1s"]`,
    `[[delivery.route]]`, `domain = "*"`, `host = "127.0.0.2"`, `port = ${mx.port}`,
  ].join("\n"));
  rt = (await startRuntime(config)).rt;
  const shop = await addUser(rt.store.db, "shop", "shop-secret-1");
  apiKey = createKey(rt.store.db, shop.id, "test").key;
  base = `http://127.0.0.1:${rt.http!.port}`;
  smtpPort = rt.smtp!.addresses()[0]!.port;
});

afterAll(async () => {
  await rt?.stop();
  await mx?.stop();
  dir?.cleanup();
});

async function scrape(): Promise<ReturnType<typeof parse>> {
  const res = await fetch(`${base}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain; version=0.0.4");
  return parse(await res.text());
}

const pending = () =>
  rt.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get()!.n;

function smtpClient(auth?: { user: string; pass: string }) {
  return nodemailer.createTransport({ host: "127.0.0.1", port: smtpPort, secure: false, ignoreTLS: true, auth });
}

describe("GET /metrics", () => {
  test("is text a standard parser reads, every family with HELP and TYPE, named outpost_*", async () => {
    const { families } = await scrape();
    expect(families.length).toBeGreaterThan(20);
    for (const f of families) {
      expect(f.name).toMatch(/^outpost_[a-z_]+$/);
      expect(f.help.length, f.name).toBeGreaterThan(10);
      if (f.type === "COUNTER") expect(f.name).toMatch(/_total$/);
    }
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const f of families) {
      expect(text).toContain(`# HELP ${f.name} `);
      expect(text).toContain(`# TYPE ${f.name} `);
    }
  });

  test("says which version runs", async () => {
    const { samples } = await scrape();
    expect(samples.get(`outpost_build_info{version="${pkg.version}"}`)).toBe(1);
  });

  test("counters move as mail flows through SMTP and the API to the receiver", async () => {
    const before = (await scrape()).samples;
    const t = smtpClient({ user: "shop", pass: "shop-secret-1" });
    try {
      await t.sendMail({ envelope: { from: "shop@shop.example", to: ["a@dest.test", "b@dest.test"] }, raw: "Subject: one\r\n\r\nhi\r\n" });
    } finally {
      t.close();
    }
    const res = await fetch(`${base}/v1/send`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ envelope: "shop@shop.example", recipient: ["c@dest.test", "bad@dest.test"], body: "Subject: two\r\n\r\nhi\r\n" }),
    });
    expect(res.status).toBe(202);
    // the bounce of bad@ sends the sender a DSN, which goes out through the same route
    await waitFor(() => mx.messages.length >= 3 && pending() === 0, 15_000, "delivery of both messages and the DSN");
    const after = (await scrape()).samples;
    const moved = (k: string) => (after.get(k) ?? NaN) - (before.get(k) ?? 0);
    expect(moved('outpost_messages_accepted_total{source="smtp"}')).toBe(1);
    expect(moved('outpost_messages_accepted_total{source="api"}')).toBe(1);
    expect(moved('outpost_messages_accepted_total{source="dsn"}')).toBe(1);
    expect(moved('outpost_recipients_accepted_total{source="smtp"}')).toBe(2);
    expect(moved('outpost_recipients_accepted_total{source="api"}')).toBe(2);
    expect(moved('outpost_smtp_messages_total{result="accepted"}')).toBe(1);
    expect(moved("outpost_smtp_sessions_total")).toBeGreaterThanOrEqual(1);
    expect(moved('outpost_delivery_attempts_total{result="delivered"}')).toBe(4);
    expect(moved('outpost_delivery_attempts_total{result="bounced"}')).toBe(1);
    expect(moved('outpost_recipients_final_total{status="delivered"}')).toBe(4);
    expect(moved('outpost_recipients_final_total{status="bounced"}')).toBe(1);
    expect(moved('outpost_dsn_queued_total{action="failed"}')).toBe(1);
    expect(moved("outpost_delivery_latency_seconds_count")).toBe(4);
    expect(after.get('outpost_queue_recipients{status="queued"}')).toBe(0);
    expect(after.get('outpost_queue_recipients{status="deferred"}')).toBe(0);
    expect(after.get("outpost_queue_oldest_age_seconds")).toBe(0);
  }, 30_000);

  test("a wrong password and a relay attempt are counted", async () => {
    const before = (await scrape()).samples;
    const wrong = smtpClient({ user: "shop", pass: "not-the-password" });
    const stranger = smtpClient();
    try {
      await expect(wrong.sendMail({ envelope: { from: "shop@shop.example", to: ["x@dest.test"] }, raw: "Subject: x\r\n\r\nx\r\n" })).rejects.toThrow();
      await expect(stranger.sendMail({ envelope: { from: "s@elsewhere.test", to: ["x@dest.test"] }, raw: "Subject: x\r\n\r\nx\r\n" })).rejects.toThrow(/relaying denied/);
    } finally {
      wrong.close();
      stranger.close();
    }
    const after = (await scrape()).samples;
    expect(after.get("outpost_smtp_auth_failures_total")! - (before.get("outpost_smtp_auth_failures_total") ?? 0)).toBe(1);
    expect(after.get("outpost_smtp_relay_denied_total")! - (before.get("outpost_smtp_relay_denied_total") ?? 0)).toBe(1);
  });

  test("the queue gauges show waiting mail and the age of the oldest message", async () => {
    mx.script.rcptDefault = "451 4.3.0 try again later";
    try {
      const t = smtpClient({ user: "shop", pass: "shop-secret-1" });
      try {
        await t.sendMail({ envelope: { from: "shop@shop.example", to: ["later@dest.test"] }, raw: "Subject: later\r\n\r\nhi\r\n" });
      } finally {
        t.close();
      }
      const deferred = await waitFor(async () => {
        const s = (await scrape()).samples;
        return (s.get('outpost_queue_recipients{status="deferred"}') ?? 0) >= 1 ? s : null;
      }, 10_000, "the recipient to be deferred");
      expect(deferred.get('outpost_delivery_attempts_total{result="deferred"}')).toBeGreaterThanOrEqual(1);
      expect(deferred.get("outpost_queue_oldest_age_seconds")).toBeGreaterThan(0);
    } finally {
      mx.script.rcptDefault = undefined;
    }
    await waitFor(() => pending() === 0, 15_000, "the retry to deliver");
  }, 30_000);
});

describe("http.metrics_token", () => {
  test("when set, /metrics needs it as a Bearer token: none or a wrong one is a 401 JSON error", async () => {
    const f = await startApi(`[http]\nlisten = "127.0.0.1:0"\nmetrics_token = "s3cret-Token_1"\n`);
    try {
      const refused: Record<string, string>[] = [{}, { authorization: "Bearer wrong" }, { authorization: "Bearer s3cret-Token_" }, { authorization: "s3cret-Token_1" }];
      for (const headers of refused) {
        const res = await f.call("GET", "/metrics", undefined, { key: null, headers });
        expect(res.status).toBe(401);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
      }
      // an API key is no metrics token
      expect((await f.call("GET", "/metrics", undefined, { key: f.key })).status).toBe(401);
      const ok = await f.call("GET", "/metrics", undefined, { key: null, headers: { authorization: "Bearer s3cret-Token_1" } });
      expect(ok.status).toBe(200);
      expect(parse(await ok.text()).samples.get("outpost_smtp_sessions_total")).toBeNumber();
    } finally {
      await f.stop();
    }
  });

  test("a reload (SIGHUP) takes a new token at once: the old one is refused from the next scrape", async () => {
    const d = tempDir();
    const toml = (token: string) => `[http]\nlisten = "127.0.0.1:0"\nmetrics_token = "${token}"\n[delivery]\nsandbox = true\n`;
    const { rt: r } = await startRuntime(testConfig(d.path, toml("first-token")));
    try {
      const scrape = (token: string) => fetch(`http://127.0.0.1:${r.http!.port}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect((await scrape("first-token")).status).toBe(200);
      r.reload(() => testConfig(d.path, toml("second-token")));
      expect((await scrape("first-token")).status).toBe(401);
      expect((await scrape("second-token")).status).toBe(200);
    } finally {
      await r.stop();
      d.cleanup();
    }
  });

  test("a token with spaces is refused at start, naming the key", () => {
    const d = tempDir();
    try {
      expect(() => testConfig(d.path, `[http]\nmetrics_token = "two words"\n`)).toThrow(/http\.metrics_token/);
    } finally {
      d.cleanup();
    }
  });
});

describe("the queue gauges' queries", () => {
  test("each reads a partial index of pending rows, never the whole recipients or messages table", () => {
    for (const [name, sql] of Object.entries(QUEUE_GAUGE_QUERIES)) {
      const plan = rt.store.sqlite.query<{ detail: string }, []>(`EXPLAIN QUERY PLAN ${sql}`).all().map((r) => r.detail);
      const reads = plan.filter((d) => /^(SCAN|SEARCH) /.test(d));
      expect(reads.length, name).toBeGreaterThan(0);
      for (const d of reads) {
        // a SCAN is allowed only through a partial index (its rows are the pending or held ones)
        if (d.startsWith("SCAN ")) expect(d, name).toMatch(/USING COVERING INDEX recipients_(new|retry|held)$/);
        else expect(d, name).toMatch(/USING (COVERING )?INDEX (recipients_pending_message|sqlite_autoindex_messages_1)/);
      }
    }
  });
});
