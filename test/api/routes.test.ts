/** The read routes through app.handle: messages, events, suppressions, health, metrics, OpenAPI; isolation and rate limits. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { MessageId, RecipientId } from "../../src/mail/ids.ts";
import { messageJson } from "../../src/queue/inspect.ts";
import { waitFor } from "../helpers/harness.ts";
import { errorOf, MIME, startApi, type ApiFixture } from "./fixture.ts";

interface EventJson {
  id: string;
  type: string;
  time: string;
  message_id: string;
  recipient: string | null;
  details: Record<string, unknown>;
}
interface MessageJson {
  id: string;
  created_at: string;
  envelope: string;
  subject: string;
  size: number;
  source: string;
  options: Record<string, boolean>;
  recipients: {
    address: string;
    id: string;
    status: string;
    held: boolean;
    in_flight: boolean;
    attempts: number;
    next_attempt_at: string | null;
    last_reply: string | null;
    last_status: string | null;
    events: EventJson[];
  }[];
}

let f: ApiFixture;
let otherKey: string;
beforeAll(async () => {
  f = await startApi();
  otherKey = await f.addUser("other");
});
afterAll(async () => {
  await f.stop();
});

async function send(key = f.key, recipient: string | string[] = "bob@example.org"): Promise<string> {
  const res = await f.call("POST", "/v1/send", { envelope: "ann@example.com", recipient, body: MIME }, { key });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

describe("GET /v1/messages/{id}", () => {
  test("shows each recipient's status, attempts, last reply and event history", async () => {
    const id = await send(f.key, ["bob@example.org", "carol@example.net"]);
    const m = await waitFor(async () => {
      const j = (await (await f.call("GET", `/v1/messages/${id}`)).json()) as MessageJson;
      return j.recipients.every((r) => r.status === "delivered") ? j : null;
    }, 5000, "sandbox delivery");
    expect(m).toMatchObject({ id, envelope: "ann@example.com", subject: "Hello", source: "api" });
    expect(m.options).toEqual({ inlinizecss: false, clicktracking: false, openstracking: false, bouncetracking: false, unsubscribe: false });
    expect(m.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(m.size).toBeGreaterThan(MIME.length);
    expect(m.recipients.map((r) => r.address)).toEqual(["bob@example.org", "carol@example.net"]);
    for (const r of m.recipients) {
      expect(r.attempts).toBe(1);
      expect(r.last_reply).toContain("250");
      expect(r).toMatchObject({ held: false, in_flight: false, next_attempt_at: null, last_status: "2.0.0" });
      expect(r.events.map((e) => e.type)).toEqual(["queued", "delivered"]);
      expect(r.events[0]).toMatchObject({ message_id: id, recipient: r.address, details: {} });
      expect(r.events[1]!.details.reply).toContain("250");
    }
  });

  test("a pending recipient shows when it is due and whether an attempt holds it (messageJson)", () => {
    const r = { id: "r1" as RecipientId, address: "a@x.org", status: "deferred" as const, attempts: 1, nextAttemptAt: 2_000, leasedUntil: 2_000,
      lastReply: "451 later", lastStatus: "4.7.1", lastMx: "mx.x.org", updatedAt: 1_000 };
    const m = { id: "m1" as MessageId, userId: null, createdAt: 0, envelopeFrom: "", subject: "", size: 1, source: "smtp" as const, messageIdHeader: null, tag: null, metadata: {},
      options: { inlineCss: true, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false }, recipients: [r, { ...r, status: "delivered" as const }] };
    const j = messageJson(m, 1_500);
    expect(j.options.inlinizecss).toBe(true);
    expect(j.recipients[0]).toEqual({ id: "r1", address: "a@x.org", status: "deferred", held: false, in_flight: true, attempts: 1,
      next_attempt_at: "1970-01-01T00:00:02.000Z", last_reply: "451 later", last_status: "4.7.1", last_mx: "mx.x.org" });
    expect(messageJson(m, 2_500).recipients[0]!.in_flight).toBe(false);
    expect(j.recipients[1]).toMatchObject({ in_flight: false, next_attempt_at: null });
  });

  test("a held recipient shows as deferred with held set and no next attempt (messageJson)", () => {
    const r = { id: "r1" as RecipientId, address: "a@x.org", status: "held" as const, attempts: 0, nextAttemptAt: 2_000, leasedUntil: null,
      lastReply: null, lastStatus: null, lastMx: null, updatedAt: 1_000 };
    const m = { id: "m1" as MessageId, userId: null, createdAt: 0, envelopeFrom: "", subject: "", size: 1, source: "smtp" as const, messageIdHeader: null, tag: null, metadata: {},
      options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false }, recipients: [r] };
    expect(messageJson(m, 5_000).recipients[0]).toMatchObject({ status: "deferred", held: true, in_flight: false, next_attempt_at: null });
  });

  test("another user's message is a 404, not a 403", async () => {
    const id = await send();
    const e = await errorOf(await f.call("GET", `/v1/messages/${id}`, undefined, { key: otherKey }));
    expect(e).toMatchObject({ status: 404, code: "not_found" });
  });

  test("an unknown id is a 404", async () => {
    expect((await f.call("GET", "/v1/messages/nosuchmessage")).status).toBe(404);
  });
});

describe("GET /v1/events", () => {
  test("pages through the caller's events oldest first, and an empty page keeps the cursor", async () => {
    const u = await f.addUser("pager");
    const ids = [await send(u), await send(u), await send(u)];
    await waitFor(async () => {
      const j = (await (await f.call("GET", "/v1/events?type=delivered&limit=1000", undefined, { key: u })).json()) as { events: EventJson[] };
      return j.events.length === 3;
    }, 5000, "three deliveries");
    const seen: EventJson[] = [];
    let cursor = "";
    for (let i = 0; i < 20; i++) {
      const res = await f.call("GET", `/v1/events?since=${cursor}&limit=2`, undefined, { key: u });
      const page = (await res.json()) as { events: EventJson[]; next_cursor: string };
      if (page.events.length === 0) {
        expect(page.next_cursor).toBe(cursor);
        break;
      }
      expect(page.events.length).toBeLessThanOrEqual(2);
      seen.push(...page.events);
      cursor = page.next_cursor;
    }
    expect(seen.filter((e) => e.type === "queued").map((e) => e.message_id)).toEqual(ids);
    expect(seen.filter((e) => e.type === "delivered").length).toBe(3);
    const numeric = seen.map((e) => Number(e.id));
    expect(numeric).toEqual([...numeric].sort((a, b) => a - b));
    expect(new Set(numeric).size).toBe(numeric.length);
  });

  test("type filters by event type, comma-separated", async () => {
    const j = (await (await f.call("GET", "/v1/events?type=queued,suppressed")).json()) as { events: EventJson[] };
    expect(j.events.length).toBeGreaterThan(0);
    expect(j.events.every((e) => e.type === "queued" || e.type === "suppressed")).toBe(true);
  });

  test("a user never sees another user's events", async () => {
    const u = await f.addUser("loner");
    const mine = (await (await f.call("GET", "/v1/events?limit=1000")).json()) as { events: EventJson[] };
    const theirs = (await (await f.call("GET", "/v1/events?limit=1000", undefined, { key: u })).json()) as { events: EventJson[]; next_cursor: string };
    expect(mine.events.length).toBeGreaterThan(0);
    expect(theirs).toEqual({ events: [], next_cursor: "0" });
  });

  const bad: [string, string][] = [
    ["limit=0", "limit"],
    ["limit=abc", "limit"],
    ["limit=5000", "limit"],
    ["since=abc", "since"],
    ["type=nonsense", "type"],
  ];
  for (const [q, field] of bad) {
    test(`${q} is a 400 naming ${field}`, async () => {
      expect(await errorOf(await f.call("GET", `/v1/events?${q}`))).toMatchObject({ status: 400, code: "invalid_request", field });
    });
  }
});

describe("/v1/suppressions", () => {
  test("add, list and remove an address", async () => {
    const add = await f.call("POST", "/v1/suppressions", { address: "Blocked@Example.org" });
    expect(add.status).toBe(201);
    const entry = await add.json();
    expect(entry).toMatchObject({ address: "blocked@example.org", reason: "manual" });
    const again = await f.call("POST", "/v1/suppressions", { address: " blocked@EXAMPLE.org" });
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual(entry);
    const list = (await (await f.call("GET", "/v1/suppressions")).json()) as { suppressions: { address: string }[] };
    expect(list.suppressions.map((s) => s.address)).toContain("blocked@example.org");
    expect((await f.call("DELETE", `/v1/suppressions/${encodeURIComponent("blocked@example.org")}`)).status).toBe(204);
    expect((await f.call("DELETE", `/v1/suppressions/${encodeURIComponent("blocked@example.org")}`)).status).toBe(404);
  });

  test("DELETE /v1/suppressions takes the address in the query or a JSON body", async () => {
    for (const a of ["q@example.org", "b@example.org"]) expect((await f.call("POST", "/v1/suppressions", { address: a })).status).toBe(201);
    expect((await f.call("DELETE", `/v1/suppressions?address=${encodeURIComponent("Q@example.org")}`)).status).toBe(204);
    expect((await f.call("DELETE", "/v1/suppressions", { address: "b@example.org" })).status).toBe(204);
    const list = (await (await f.call("GET", "/v1/suppressions")).json()) as { suppressions: { address: string }[] };
    expect(list.suppressions.map((s) => s.address)).not.toContain("q@example.org");
    expect(list.suppressions.map((s) => s.address)).not.toContain("b@example.org");
    expect(await errorOf(await f.call("DELETE", "/v1/suppressions", { address: "b@example.org" }))).toMatchObject({ status: 404, field: "address" });
    expect(await errorOf(await f.call("DELETE", "/v1/suppressions"))).toMatchObject({ status: 400, field: "address" });
  });

  test("each user sees and changes only their own list", async () => {
    expect((await f.call("POST", "/v1/suppressions", { address: "mine@example.org" })).status).toBe(201);
    expect((await f.call("POST", "/v1/suppressions", { address: "theirs@example.org" }, { key: otherKey })).status).toBe(201);
    const listOf = async (key: string) =>
      ((await (await f.call("GET", "/v1/suppressions", undefined, { key })).json()) as { suppressions: { address: string }[] }).suppressions.map((s) => s.address);
    expect(await listOf(f.key)).toContain("mine@example.org");
    expect(await listOf(f.key)).not.toContain("theirs@example.org");
    expect(await listOf(otherKey)).toEqual(["theirs@example.org"]);
    // another user's entry is not on the caller's list: 404, and it stays
    expect(await errorOf(await f.call("DELETE", "/v1/suppressions", { address: "theirs@example.org" }))).toMatchObject({ status: 404, field: "address" });
    expect(await listOf(otherKey)).toEqual(["theirs@example.org"]);
    // the same address on both lists: removing it from one leaves the other
    expect((await f.call("POST", "/v1/suppressions", { address: "theirs@example.org" })).status).toBe(201);
    expect((await f.call("DELETE", "/v1/suppressions", { address: "theirs@example.org" })).status).toBe(204);
    expect(await listOf(otherKey)).toEqual(["theirs@example.org"]);
  });

  test("a complaint entry cannot be removed by the user (403 naming reason)", async () => {
    const add = await f.call("POST", "/v1/suppressions", { address: "angry@example.org", reason: "complaint" });
    expect(await add.json()).toMatchObject({ address: "angry@example.org", reason: "complaint" });
    expect(await errorOf(await f.call("DELETE", `/v1/suppressions/${encodeURIComponent("angry@example.org")}`))).toMatchObject({
      status: 403,
      code: "forbidden",
      field: "reason",
    });
    const list = (await (await f.call("GET", "/v1/suppressions")).json()) as { suppressions: { address: string; reason: string }[] };
    expect(list.suppressions).toContainEqual(expect.objectContaining({ address: "angry@example.org", reason: "complaint" }));
  });

  test("a complaint outranks an earlier manual entry; the other reasons keep what is there", async () => {
    expect((await f.call("POST", "/v1/suppressions", { address: "later@example.org" })).status).toBe(201);
    const upgraded = await f.call("POST", "/v1/suppressions", { address: "later@example.org", reason: "complaint" });
    expect(upgraded.status).toBe(201);
    expect(await upgraded.json()).toMatchObject({ reason: "complaint" });
    const kept = await f.call("POST", "/v1/suppressions", { address: "later@example.org", reason: "unsubscribe" });
    expect(kept.status).toBe(200);
    expect(await kept.json()).toMatchObject({ reason: "complaint" });
  });

  test("an unknown reason is a 400 naming reason", async () => {
    expect(await errorOf(await f.call("POST", "/v1/suppressions", { address: "x@example.org", reason: "spite" }))).toMatchObject({ status: 400, field: "reason" });
    const list = (await (await f.call("GET", "/v1/suppressions")).json()) as { suppressions: { address: string }[] };
    expect(list.suppressions.map((s) => s.address)).not.toContain("x@example.org");
  });

  test("one mailbox is one entry, however it is spelt", async () => {
    const add = await f.call("POST", "/v1/suppressions", { address: "Foo@Bücher.Example" });
    expect(await add.json()).toMatchObject({ address: "foo@xn--bcher-kva.example" });
    expect((await f.call("POST", "/v1/suppressions", { address: '"FOO"@XN--BCHER-KVA.EXAMPLE' })).status).toBe(200);
    expect((await f.call("DELETE", "/v1/suppressions", { address: '"foo"@bücher.example' })).status).toBe(204);
  });

  test("an invalid address is a 400 naming address", async () => {
    expect(await errorOf(await f.call("POST", "/v1/suppressions", { address: "nope" }))).toMatchObject({ status: 400, field: "address" });
    expect(await errorOf(await f.call("POST", "/v1/suppressions", {}))).toMatchObject({ status: 400, field: "address" });
    expect(await errorOf(await f.call("POST", "/v1/suppressions", { address: "a\u0000b@example.org" }))).toMatchObject({ status: 400, field: "address" });
  });
});

describe("health, metrics and the OpenAPI document", () => {
  test("GET /healthz needs no key and reports the queue depth", async () => {
    const res = await f.call("GET", "/healthz", undefined, { key: null });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok", queue_depth: expect.any(Number) });
  });

  test("GET /healthz is a 503 while the store does not answer, and /metrics still answers", async () => {
    const g = await startApi();
    try {
      g.rt.store.sqlite.run("ALTER TABLE recipients RENAME TO recipients_away");
      expect(await errorOf(await g.call("GET", "/healthz", undefined, { key: null }))).toMatchObject({ status: 503, code: "unavailable" });
      const metrics = await g.call("GET", "/metrics", undefined, { key: null });
      expect(metrics.status).toBe(200);
      // the queue gauges have no sample when the store cannot be read; everything else still renders
      const text = await metrics.text();
      expect(text).not.toMatch(/^outpost_queue_recipients\{/m);
      expect(text).toMatch(/^outpost_smtp_sessions_total \d+$/m);
    } finally {
      g.rt.store.sqlite.run("ALTER TABLE recipients_away RENAME TO recipients");
      await g.stop();
    }
  });

  test("GET /metrics is Prometheus text without a key", async () => {
    const res = await f.call("GET", "/metrics", undefined, { key: null });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const text = await res.text();
    expect(text).toMatch(/^outpost_messages_accepted_total\{source="api"\} \d+$/m);
    expect(text).toMatch(/^outpost_queue_recipients\{status="queued"\} \d+$/m);
  });

  test("the running server's /metrics adds SMTP, delivery and throttle figures", async () => {
    const text = await (await fetch(`${f.base}/metrics`)).text();
    expect(text).toMatch(/^outpost_smtp_messages_total\{result="accepted"\} \d+$/m);
    expect(text).toMatch(/^outpost_dsn_queued_total\{action="failed"\} \d+$/m);
    expect(text).toMatch(/^outpost_delivery_concurrency \d+$/m);
  });

  test("GET /metrics counts delivery outcomes: a message sent (sandbox) shows up as delivered", async () => {
    const delivered = async () => {
      const text = await (await fetch(`${f.base}/metrics`)).text();
      return Number(/^outpost_recipients_final_total\{status="delivered"\} (\d+)$/m.exec(text)?.[1] ?? NaN);
    };
    const before = await delivered();
    expect(before).toBeGreaterThanOrEqual(0);
    const res = await f.call("POST", "/v1/send", { envelope: "ann@example.com", recipient: "counted@example.org", body: MIME });
    expect(res.status).toBe(202);
    await waitFor(async () => (await delivered()) > before, 5000, "the delivered counter to move");
  });

  test("GET /openapi.json documents every send field and all three body types", async () => {
    const doc = (await (await f.call("GET", "/openapi.json", undefined, { key: null })).json()) as {
      paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, { description?: string; anyOf?: unknown }> } }> } }>>;
    };
    for (const p of ["/v1/send", "/v1/messages", "/v1/messages/{id}", "/v1/events", "/v1/suppressions", "/v1/suppressions/{address}", "/healthz", "/metrics"]) {
      expect(doc.paths[p]).toBeDefined();
    }
    const content = doc.paths["/v1/send"]!.post!.requestBody!.content;
    expect(Object.keys(content).sort()).toEqual(["application/json", "application/x-www-form-urlencoded", "multipart/form-data"]);
    const props = content["application/json"]!.schema.properties;
    const fields = ["envelope", "recipient", "body", "from", "to", "cc", "bcc", "subject", "text", "html", "headers", "attachments", "inlinizecss", "clicktracking", "openstracking", "bouncetracking", "unsubscribe", "idempotency_key", "reply_to", "tag", "metadata"];
    expect(Object.keys(props).sort()).toEqual([...fields].sort());
    for (const name of fields) expect(props[name]!.description ?? "").not.toBe("");
  });

  test("GET /openapi.json documents the message listing's parameters, the events' message_id, and tag and metadata on EVENT", async () => {
    const doc = (await (await f.call("GET", "/openapi.json", undefined, { key: null })).json()) as {
      paths: Record<string, Record<string, { parameters?: { name: string; description?: string }[]; responses: Record<string, unknown> }>>;
      components: { schemas: Record<string, { properties: Record<string, unknown> }> };
    };
    const names = (path: string) => doc.paths[path]!.get!.parameters!.map((p) => p.name);
    expect(names("/v1/messages").sort()).toEqual(["cursor", "limit", "recipient", "since", "status", "tag", "until"]);
    expect(names("/v1/events")).toContain("message_id");
    expect(Object.keys(doc.components.schemas.Event!.properties)).toEqual(expect.arrayContaining(["tag", "metadata"]));
    expect(Object.keys(doc.paths["/v1/send"]!.post!.responses)).toEqual(expect.arrayContaining(["409", "415"]));
  });

  test("GET /openapi.json documents the Idempotency-Key request header and the response headers of /v1/send", async () => {
    const doc = (await (await f.call("GET", "/openapi.json", undefined, { key: null })).json()) as {
      paths: Record<string, Record<string, { parameters?: { name: string; in: string }[]; responses: Record<string, { headers?: Record<string, { schema: unknown }> }> }>>;
    };
    const send = doc.paths["/v1/send"]!.post!;
    expect(send.parameters).toContainEqual(expect.objectContaining({ name: "Idempotency-Key", in: "header" }));
    expect(Object.keys(send.responses["202"]!.headers ?? {})).toEqual(["Idempotent-Replayed"]);
    expect(Object.keys(send.responses["429"]!.headers ?? {})).toEqual(["Retry-After"]);
    expect(Object.keys(send.responses["503"]!.headers ?? {})).toEqual(["Retry-After"]);
    // the body schemas lose the `headers` key the document reads them from
    expect(JSON.stringify(send.responses["202"])).toContain('"recipients"');
  });

  test("GET /docs serves the docs page with outpost's own copy of Scalar and well-formed meta tags", async () => {
    const res = await f.call("GET", "/docs", undefined, { key: null });
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).toContain("openapi.json");
    const scripts = [...html.matchAll(/<script src="([^"]*)"/g)].map((m) => m[1]!);
    expect(scripts).toEqual([expect.stringMatching(/^docs\/assets\/scalar-\d+\.\d+\.\d+\.js$/)]);
    // each <meta ...> is attribute="value" pairs only: a stray quote from the description would break this
    const metas = [...html.matchAll(/<meta\b([^>]*)>/g)].map((m) => m[1]!.replace(/\/\s*$/, "").trim());
    expect(metas.length).toBeGreaterThanOrEqual(3);
    for (const attrs of metas) expect(attrs).toMatch(/^(?:[a-z:-]+="[^"<&]*"\s*)+$/);
    expect(html).toMatch(/<meta\s+name="description"\s+content="Self-hosted email relay[^"]*field at fault\."/);
  });

  test("an unknown path is a JSON 404", async () => {
    expect(await errorOf(await f.call("GET", "/nope", undefined, { key: null }))).toMatchObject({ status: 404, code: "not_found" });
  });
});

describe("rate limit", () => {
  test("a key over [http] rate gets 429 with Retry-After; another key is not affected", async () => {
    const g = await startApi(`[http]\nlisten = "127.0.0.1:0"\nrate = "3/min"\n`);
    try {
      const other = await g.addUser("second");
      for (let i = 0; i < 3; i++) expect((await g.call("GET", "/v1/suppressions")).status).toBe(200);
      const res = await g.call("GET", "/v1/suppressions");
      expect(res.status).toBe(429);
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(await errorOf(res)).toMatchObject({ code: "rate_limited" });
      expect((await g.call("GET", "/v1/suppressions", undefined, { key: other })).status).toBe(200);
      expect((await g.call("GET", "/healthz", undefined, { key: null })).status).toBe(200);
    } finally {
      await g.stop();
    }
  });
});
