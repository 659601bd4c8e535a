/**
 * Per-recipient delivery end to end: messages sent through the API with click and open tracking, one-click
 * unsubscribe and a [[dkim]] key reach a fake MX as each recipient's own signed copy; the links in those copies,
 * followed over outpost's real HTTP listener, redirect and record; the signatures verify with mailauth and with
 * python3-dkim; what cannot be rewritten still goes out.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { simpleParser } from "mailparser";
import { generateDkimKey } from "../../src/dkim/generate.ts";
import { startApi, type ApiFixture } from "../api/fixture.ts";
import { mailauthResults, pythonResults, pythonWithDkim, type TxtRecords } from "../helpers/dkim-verify.ts";
import { startFakeMx, type FakeMx, type ReceivedMessage } from "../helpers/fake-mx.ts";
import { tempDir, waitFor } from "../helpers/harness.ts";

const PUBLIC = "https://track.example.com";
const MALFORMED = join(import.meta.dir, "../fixtures/html/malformed");
const records: TxtRecords = {};
const python = pythonWithDkim();
let f: ApiFixture;
let mx: FakeMx;
/** a receiver that takes messages up to 40,000 bytes (SIZE), for small.test */
let small: FakeMx;
const SMALL_LIMIT = 40_000;
let keyDir: ReturnType<typeof tempDir>;

beforeAll(async () => {
  mx = await startFakeMx({ host: "127.0.0.2" });
  small = await startFakeMx({ host: "127.0.0.3", size: SMALL_LIMIT });
  keyDir = tempDir("outpost-dkim-");
  const key = generateDkimKey("rsa");
  records["s1._domainkey.example.com"] = key.record;
  const keyFile = join(keyDir.path, "example.com.s1.pem");
  writeFileSync(keyFile, key.privatePem, { mode: 0o600 });
  f = await startApi(
    `[http]\nlisten = "127.0.0.1:0"\npublic_url = "${PUBLIC}"\n` +
      `[delivery]\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n` +
      `[[delivery.route]]\ndomain = "small.test"\nhost = "127.0.0.3"\nport = ${small.port}\n` +
      `[[dkim]]\ndomain = "example.com"\nselector = "s1"\nprivate_key_file = "${keyFile}"\n`,
  );
});

afterAll(async () => {
  await f?.stop();
  await mx?.stop();
  await small?.stop();
  keyDir?.cleanup();
});

interface Sent {
  id: string;
  recipients: { address: string; id: string; status: string }[];
}

const HTML =
  '<html><body><h1>Issue 1</h1><p><a href="https://shop.example/item?id=7&amp;ref=mail">Buy</a> or ' +
  '<a href="mailto:help@example.com">write</a></p></body></html>';

async function send(fields: Record<string, unknown>): Promise<Sent> {
  const res = await f.call("POST", "/v1/send", { envelope: "news@example.com", ...fields });
  expect(res.status).toBe(202);
  return (await res.json()) as Sent;
}

const received = (subject: string): ReceivedMessage[] => mx.messages.filter((m) => m.raw.toString("latin1").includes(`\r\nSubject: ${subject}\r\n`));

async function delivered(sent: Sent): Promise<void> {
  await waitFor(async () => {
    const res = await f.call("GET", `/v1/messages/${sent.id}`);
    const m = (await res.json()) as { recipients: { status: string }[] };
    return m.recipients.every((r) => r.status === "delivered" || r.status === "suppressed");
  }, 15_000, `message ${sent.id} delivered`);
}

async function eventsOf(id: string, address: string): Promise<{ type: string; details: Record<string, unknown> }[]> {
  const res = await f.call("GET", `/v1/messages/${id}`);
  const m = (await res.json()) as { recipients: { address: string; events: { type: string; details: Record<string, unknown> }[] }[] };
  return m.recipients.find((r) => r.address === address)!.events;
}

/** Both verifiers (python3-dkim when installed) on every signature of `raw`. */
async function expectVerified(raw: Buffer): Promise<void> {
  expect(await mailauthResults(raw, records)).toEqual(["s1._domainkey.example.com: pass"]);
  if (python) expect(pythonResults(python, raw, records)).toEqual([true]);
}

describe("tracked, unsubscribable, signed: each recipient's own copy", () => {
  let tracked: Sent;
  let untracked: Sent;
  let copies: Map<string, { raw: Buffer; html: string }>;

  beforeAll(async () => {
    if (!python) console.warn("python3-dkim is not installed (apt-get install python3-dkim): signatures are checked with mailauth only");
    tracked = await send({
      from: "News <news@example.com>", recipient: ["ann@dest.test", "bob@dest.test"], subject: "Tracked issue", html: HTML, text: "Issue 1",
      clicktracking: true, openstracking: true, unsubscribe: true,
    });
    untracked = await send({ from: "news@example.com", recipient: ["cat@dest.test", "dan@dest.test"], subject: "Plain issue", html: HTML });
    await delivered(tracked);
    await delivered(untracked);
    copies = new Map();
    for (const m of received("Tracked issue")) copies.set(m.to.join(), { raw: m.raw, html: String((await simpleParser(m.raw)).html) });
  });

  test("two tracked recipients never share a transaction; untracked recipients of one message share one", () => {
    expect(received("Tracked issue").map((m) => m.to)).toEqual(expect.arrayContaining([["ann@dest.test"], ["bob@dest.test"]]));
    expect(received("Tracked issue")).toHaveLength(2);
    expect(received("Plain issue").map((m) => [...m.to].sort())).toEqual([["cat@dest.test", "dan@dest.test"]]);
  });

  test("links point to {public_url}/t/c/, the pixel is there, List-Unsubscribe and its one-click Post field are there", () => {
    const tokens = new Set<string>();
    for (const address of ["ann@dest.test", "bob@dest.test"]) {
      const { raw, html } = copies.get(address)!;
      const link = /href="(https:\/\/track\.example\.com\/t\/c\/[^"]+)"/.exec(html)![1]!;
      tokens.add(link);
      expect(html).toContain('href="mailto:help@example.com"');
      expect(html).toMatch(/<img src="https:\/\/track\.example\.com\/t\/o\/[^"]+" width="1" height="1"/);
      const head = raw.toString("latin1").slice(0, raw.indexOf("\r\n\r\n"));
      expect(head).toMatch(/\r\nList-Unsubscribe: <https:\/\/track\.example\.com\/t\/u\/[A-Za-z0-9_-]+>\r\n/);
      expect(head).toContain("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click");
    }
    expect(tokens.size).toBe(2);
    const plain = received("Plain issue")[0]!.raw.toString("latin1");
    expect(plain).not.toContain("/t/c/");
    expect(plain).not.toContain("List-Unsubscribe");
  });

  test("every copy's DKIM signature verifies (mailauth, and python3-dkim when installed)", async () => {
    for (const { raw } of copies.values()) await expectVerified(raw);
    await expectVerified(received("Plain issue")[0]!.raw);
    const metrics = await (await f.call("GET", "/metrics")).text();
    // two tracked copies and one shared untracked transaction
    expect(metrics).toMatch(/^outpost_dkim_signatures_total\{algorithm="rsa-sha256"\} 3$/m);
  });

  test("a delivered link redirects to its original URL and records clicked; the pixel records opened", async () => {
    const { html } = copies.get("ann@dest.test")!;
    const link = /href="https:\/\/track\.example\.com(\/t\/c\/[^"]+)"/.exec(html)![1]!;
    const res = await fetch(`${f.base}${link}`, { redirect: "manual" });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe("https://shop.example/item?id=7&ref=mail");
    const pixel = /<img src="https:\/\/track\.example\.com(\/t\/o\/[^"]+)"/.exec(html)![1]!;
    const gif = await fetch(`${f.base}${pixel}`);
    expect([gif.status, gif.headers.get("content-type")]).toEqual([200, "image/gif"]);
    const types = (await eventsOf(tracked.id, "ann@dest.test")).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(["delivered", "clicked", "opened"]));
    expect((await eventsOf(tracked.id, "bob@dest.test")).map((e) => e.type)).not.toContain("clicked");
  });

  test("a one-click POST to the List-Unsubscribe URL records unsubscribed, and a later send to the address is suppressed", async () => {
    const head = copies.get("bob@dest.test")!.raw.toString("latin1");
    const url = /\r\nList-Unsubscribe: <https:\/\/track\.example\.com(\/t\/u\/[^>]+)>/.exec(head)![1]!;
    const res = await fetch(`${f.base}${url}`, {
      method: "POST", body: "List-Unsubscribe=One-Click", headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(res.status).toBe(200);
    expect((await eventsOf(tracked.id, "bob@dest.test")).map((e) => e.type)).toContain("unsubscribed");
    const later = await send({ recipient: ["bob@dest.test", "ann@dest.test"], subject: "Later", text: "again" });
    expect(later.recipients.map((r) => [r.address, r.status])).toEqual([["bob@dest.test", "suppressed"], ["ann@dest.test", "queued"]]);
  });
});

describe("SIZE", () => {
  test("a receiver's SIZE limit is held against the bytes sent: a tracked copy that outgrew it bounces, the stored size fits", async () => {
    const links = Array.from({ length: 60 }, (_, i) => `<p><a href="https://shop.example/item/${i}">Item ${i}</a></p>`).join("\n");
    const html = `<html><body>${links}\n${"<p>filler</p>\n".repeat(2150)}</body></html>`;
    const fields = { from: "news@example.com", recipient: ["amy@small.test"], subject: "Sized", html };
    const plain = await send(fields);
    const tracked = await send({ ...fields, clicktracking: true });
    const size = async (s: Sent) => ((await (await f.call("GET", `/v1/messages/${s.id}`)).json()) as { size: number }).size;
    // both stored below the limit; tracking adds ~150 bytes per link and the signature ~500
    expect(await size(tracked)).toBeLessThan(SMALL_LIMIT - 1500);
    expect(await size(tracked)).toBeGreaterThan(SMALL_LIMIT - 5000);
    await delivered(plain);
    const bounced = await waitFor(async () => {
      const m = (await (await f.call("GET", `/v1/messages/${tracked.id}`)).json()) as { recipients: { status: string; last_status: string; last_reply: string }[] };
      return m.recipients[0]!.status === "bounced" ? m.recipients[0] : null;
    }, 15_000, "the tracked copy bounced");
    expect(bounced).toMatchObject({ last_status: "5.3.4", last_reply: expect.stringContaining(`larger than allowed ${SMALL_LIMIT}`) });
    expect(small.messages.map((m) => m.raw.length)).toEqual([expect.any(Number)]);
    expect(small.messages[0]!.raw.toString("latin1")).not.toContain("/t/c/");
  });
});

describe("what cannot be rewritten", () => {
  test("a message with malformed MIME is delivered with its HTML as stored, signed, and the skip is logged and counted", async () => {
    const raw = readFileSync(join(MALFORMED, "missing-closing-boundary.eml"), "latin1")
      .replace(/^From: .*$/m, "From: news@example.com")
      .replace(/^Subject: .*$/m, "Subject: Broken issue");
    const sent = await send({ recipient: ["eve@dest.test"], body: raw, clicktracking: true, openstracking: true });
    await delivered(sent);
    const copy = received("Broken issue")[0]!.raw;
    const text = copy.toString("latin1");
    expect(text).not.toContain("/t/c/");
    expect(text).toContain('<a href="https://a.example/">a</a>');
    await expectVerified(copy);
    expect(f.logs.filter((l) => l.event === "personalize_skipped" && l.queue_id === sent.id)).toMatchObject([
      { level: "warn", recipients: 1, reason: expect.stringContaining("without its closing boundary") },
    ]);
    const metrics = await (await f.call("GET", "/metrics")).text();
    expect(metrics).toMatch(/^outpost_personalize_skipped_total\{reason="unclosed_multipart"\} [1-9]/m);
  });

  test("every malformed MIME sample in the suite, tracked, goes through delivery without a crash", async () => {
    const files = readdirSync(MALFORMED).filter((n) => n.endsWith(".eml"));
    const sent: Sent[] = [];
    for (const [i, name] of files.entries()) {
      const raw = readFileSync(join(MALFORMED, name), "latin1").replace(/^Subject: .*$/m, `Subject: Sample ${i}`);
      sent.push(await send({ recipient: [`s${i}@dest.test`, `t${i}@dest.test`], body: raw, clicktracking: true, openstracking: true, unsubscribe: true }));
    }
    for (const s of sent) await delivered(s);
    for (const [i] of files.entries()) expect(received(`Sample ${i}`)).toHaveLength(2);
    expect(f.logs.filter((l) => l.event === "personalize_failed")).toEqual([]);
  });
});
