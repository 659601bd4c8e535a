/**
 * The tracking links as a reader's browser and a mail provider follow them, over real HTTP: clicks redirect and
 * are recorded, the pixel is always a GIF, one-click unsubscribe suppresses for the message's owner, and nothing
 * we did not sign redirects, records or unsubscribes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { derivedKey } from "../../src/mail/keys.ts";
import type { MessageId, RecipientId } from "../../src/mail/ids.ts";
import { TrackingTokens } from "../../src/tracking/token.ts";
import { sendOverSmtp } from "../bounce/fixture.ts";
import { startApi, type ApiFixture } from "../api/fixture.ts";
import { runCli, tempDir } from "../helpers/harness.ts";

let f: ApiFixture;
let msg: { id: MessageId; rcpt: { address: string; id: RecipientId }[] };

interface EventJson {
  type: string;
  recipient: string;
  message_id: string;
  details: Record<string, unknown>;
}

beforeAll(async () => {
  f = await startApi(`[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://track.example.com/o"\n[smtp]\nlisten = ["127.0.0.1:0"]\ntrusted_networks = ["127.0.0.41"]\n`);
  msg = await send(f.key, ["ann@dest.example", "bob@dest.example", "cat@dest.example", "dan@dest.example"]);
});
afterAll(async () => {
  await f?.stop();
});

async function send(key: string, recipients: string[], extra: Record<string, unknown> = {}) {
  const res = await f.call("POST", "/v1/send", { envelope: "news@example.com", recipient: recipients, body: "Subject: hi\r\n\r\nhi\r\n", unsubscribe: true, ...extra }, { key });
  expect(res.status).toBe(202);
  const body = (await res.json()) as { id: MessageId; recipients: { address: string; id: RecipientId; status: string }[] };
  return { id: body.id, rcpt: body.recipients };
}

/** A plain browser request on the real listener, never following a redirect. */
const get = (path: string, headers: Record<string, string> = {}) => fetch(`${f.base}${path}`, { redirect: "manual", headers });
const post = (path: string, body?: string, type = "application/x-www-form-urlencoded") =>
  fetch(`${f.base}${path}`, { method: "POST", redirect: "manual", body, headers: body === undefined ? {} : { "content-type": type } });

async function eventsOf(id: string, address: string, key = f.key): Promise<EventJson[]> {
  const res = await f.call("GET", `/v1/messages/${id}`, undefined, { key });
  const m = (await res.json()) as { recipients: { address: string; events: EventJson[] }[] };
  return m.recipients.find((r) => r.address === address)!.events;
}

const typesOf = async (id: string, address: string) => (await eventsOf(id, address)).map((e) => e.type);
const tokens = () => f.rt.tokens;

/** A click token for any URL, signed with the instance's key as TrackingTokens would, bypassing its URL check. */
function signedClickForAnyUrl(url: string): string {
  const signed = `${msg.id}${msg.rcpt[0]!.id.slice(1)}0.${Buffer.from(url).toString("base64url")}`;
  return `${signed}.${createHmac("sha256", derivedKey(f.rt.secret, "click")).update(signed).digest().subarray(0, 16).toString("base64url")}`;
}

async function expectNotFound(res: Response): Promise<void> {
  expect(res.status).toBe(404);
  expect(res.headers.get("location")).toBeNull();
  expect(res.headers.get("content-type")).toContain("application/json");
  expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
}

describe("GET /t/c/{token}", () => {
  test("redirects 302 to the exact original URL, & and escapes kept, and records a click with URL, agent and IP", async () => {
    const url = "https://shop.example/item?id=7&ref=mail&q=a%20b#top";
    const ann = msg.rcpt[0]!;
    const res = await get(`/t/c/${tokens().click(msg.id, ann.id, 4, url)}`, { "user-agent": "Mozilla/5.0 (test)" });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe(url);
    const clicks = (await eventsOf(msg.id, ann.address)).filter((e) => e.type === "clicked");
    expect(clicks).toHaveLength(1);
    expect(clicks[0]!.details).toEqual({ url, link_index: 4, user_agent: "Mozilla/5.0 (test)", client_ip: "127.0.0.1" });
  });

  test("a HEAD gets the same redirect and records nothing", async () => {
    const bob = msg.rcpt[1]!;
    const res = await fetch(`${f.base}/t/c/${tokens().click(msg.id, bob.id, 0, "https://a.example/x")}`, { method: "HEAD", redirect: "manual" });
    expect([res.status, res.headers.get("location")]).toEqual([302, "https://a.example/x"]);
    const pixel = await fetch(`${f.base}/t/o/${tokens().open(msg.id, bob.id)}`, { method: "HEAD" });
    expect([pixel.status, pixel.headers.get("content-type")]).toEqual([200, "image/gif"]);
    expect((await typesOf(msg.id, bob.address)).filter((t) => t === "clicked" || t === "opened")).toEqual([]);
  });

  test("a URL of 4,096 characters survives the round trip", async () => {
    const url = `https://shop.example/${"p".repeat(4096 - 21)}`;
    expect(url).toHaveLength(4096);
    const res = await get(`/t/c/${tokens().click(msg.id, msg.rcpt[0]!.id, 0, url)}`);
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe(url);
  });

  test("a forged, altered, truncated or foreign token is a 404 JSON error, never a redirect, and records nothing", async () => {
    const bob = msg.rcpt[1]!;
    const good = tokens().click(msg.id, bob.id, 0, "https://good.example/");
    const evilUrl = Buffer.from("https://evil.example/").toString("base64url");
    const foreign = new TrackingTokens(Buffer.alloc(32, 9)).click(msg.id, bob.id, 0, "https://evil.example/");
    for (const token of [
      good.slice(0, -1),
      good.slice(0, 40),
      good.slice(0, -2) + (good.endsWith("AA") ? "BB" : "AA"),
      good.replace(/\.[^.]+\./, `.${evilUrl}.`),
      foreign,
      "x",
    ]) {
      await expectNotFound(await get(`/t/c/${token}`));
    }
    expect(await typesOf(msg.id, bob.address)).not.toContain("clicked");
  });

  test("CR/LF in the path never reaches a header", async () => {
    const good = tokens().click(msg.id, msg.rcpt[1]!.id, 0, "https://good.example/");
    for (const tail of ["%0d%0aLocation:%20https://evil.example", "%0D%0ASet-Cookie:%20a=b", "%0a"]) {
      const res = await get(`/t/c/${good}${tail}`);
      await expectNotFound(res);
      expect(res.headers.get("set-cookie")).toBeNull();
    }
  });

  test("javascript:, data:, scheme-relative and other non-http targets are refused even when signed", async () => {
    for (const url of ["javascript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>", "//evil.example/",
      "/\\evil.example", "http:evil.example", "https://x.example/\r\nSet-Cookie: a=b", "ftp://files.example/"]) {
      await expectNotFound(await get(`/t/c/${signedClickForAnyUrl(url)}`));
    }
    expect(() => tokens().click(msg.id, msg.rcpt[0]!.id, 0, "javascript:alert(1)")).toThrow(RangeError);
  });

  test("behind a reverse proxy on loopback, the client is the address the proxy names in X-Forwarded-For", async () => {
    const dan = msg.rcpt[3]!;
    await get(`/t/c/${tokens().click(msg.id, dan.id, 1, "https://a.example/")}`, { "x-forwarded-for": "198.51.100.7, 203.0.113.9" });
    const click = (await eventsOf(msg.id, dan.address)).find((e) => e.type === "clicked")!;
    expect(click.details.client_ip).toBe("203.0.113.9");
  });
});

describe("GET /t/o/{token}", () => {
  const expectGif = async (res: Response) => {
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/gif");
    expect(res.headers.get("cache-control")).toBe("no-store");
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(bytes.subarray(0, 6).toString("latin1")).toBe("GIF89a");
    expect([bytes.readUInt16LE(6), bytes.readUInt16LE(8)]).toEqual([1, 1]);
    expect(bytes).toHaveLength(43);
  };

  test("a valid token gets the GIF and records an open each time", async () => {
    const cat = msg.rcpt[2]!;
    const token = tokens().open(msg.id, cat.id);
    await expectGif(await get(`/t/o/${token}`, { "user-agent": "MailClient/1.0" }));
    await expectGif(await get(`/t/o/${token}`, { "user-agent": "MailClient/1.0" }));
    const opens = (await eventsOf(msg.id, cat.address)).filter((e) => e.type === "opened");
    expect(opens.map((e) => e.details)).toEqual([1, 2].map(() => ({ user_agent: "MailClient/1.0", client_ip: "127.0.0.1" })));
  });

  test("a forged token still gets the same GIF, and records nothing", async () => {
    const bob = msg.rcpt[1]!;
    const token = tokens().open(msg.id, bob.id);
    for (const bad of [token.slice(0, -1) + (token.endsWith("A") ? "B" : "A"), token.slice(1), tokens().unsubscribe(msg.id, bob.id), "nothing"]) {
      await expectGif(await get(`/t/o/${bad}`));
    }
    expect(await typesOf(msg.id, bob.address)).not.toContain("opened");
  });
});

describe("/t/u/{token}", () => {
  const suppressionsOf = async (key: string) =>
    ((await (await f.call("GET", "/v1/suppressions", undefined, { key })).json()) as { suppressions: { address: string; reason: string }[] }).suppressions;

  test("GET shows a page with one button that posts to the same URL, and unsubscribes nobody", async () => {
    const ann = msg.rcpt[0]!;
    const token = tokens().unsubscribe(msg.id, ann.id);
    const res = await get(`/t/u/${token}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await res.text();
    expect(html.match(/<form /g)).toHaveLength(1);
    expect(html.match(/<button/g)).toHaveLength(1);
    expect(html).toContain(`<form method="post" action="./${token}">`);
    expect(html).toContain('name="List-Unsubscribe" value="One-Click"');
    expect(html).toContain(ann.address);
    expect(await suppressionsOf(f.key)).toEqual([]);
    expect(await typesOf(msg.id, ann.address)).not.toContain("unsubscribed");
  });

  test("the one-click POST (RFC 8058) suppresses the address for the sender, records it once, and repeats change nothing", async () => {
    const ann = msg.rcpt[0]!;
    const path = `/t/u/${tokens().unsubscribe(msg.id, ann.id)}`;
    for (let i = 0; i < 2; i++) {
      const res = await post(path, "List-Unsubscribe=One-Click");
      expect(res.status).toBe(200);
      expect(await res.text()).toContain("Unsubscribed");
    }
    expect(await suppressionsOf(f.key)).toEqual([expect.objectContaining({ address: ann.address, reason: "unsubscribe" })]);
    expect((await typesOf(msg.id, ann.address)).filter((t) => t === "unsubscribed")).toHaveLength(1);
    const page = await f.call("GET", "/v1/events?type=unsubscribed");
    const events = ((await page.json()) as { events: EventJson[] }).events;
    expect(events.map((e) => [e.message_id, e.recipient])).toEqual([[msg.id, ann.address]]);
  });

  test("a later send by the same user to that address is suppressed; another user's is not", async () => {
    const again = await send(f.key, ["ann@dest.example"]);
    expect((await f.call("GET", `/v1/messages/${again.id}`)).status).toBe(200);
    const res = await f.call("POST", "/v1/send", { envelope: "news@example.com", recipient: "Ann@Dest.example", body: "Subject: x\r\n\r\nx\r\n" });
    expect(((await res.json()) as { recipients: { status: string }[] }).recipients[0]!.status).toBe("suppressed");
    const other = await f.addUser("other");
    const theirs = await f.call("POST", "/v1/send", { envelope: "x@example.com", recipient: "ann@dest.example", body: "Subject: x\r\n\r\nx\r\n" }, { key: other });
    expect(((await theirs.json()) as { recipients: { status: string }[] }).recipients[0]!.status).toBe("queued");
  });

  test("an empty POST and a multipart one unsubscribe too; another body is a 400", async () => {
    const [bob, cat] = [msg.rcpt[1]!, msg.rcpt[2]!];
    expect((await post(`/t/u/${tokens().unsubscribe(msg.id, bob.id)}`)).status).toBe(200);
    const form = new FormData();
    form.set("List-Unsubscribe", "One-Click");
    expect((await fetch(`${f.base}/t/u/${tokens().unsubscribe(msg.id, cat.id)}`, { method: "POST", body: form })).status).toBe(200);
    const dan = msg.rcpt[3]!;
    const bad = await post(`/t/u/${tokens().unsubscribe(msg.id, dan.id)}`, "please=yes");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { field: string } }).error.field).toBe("List-Unsubscribe");
    const listed = (await suppressionsOf(f.key)).map((s) => s.address);
    expect(listed).toContain(bob.address);
    expect(listed).toContain(cat.address);
    expect(listed).not.toContain(dan.address);
  });

  test("a forged token is a 404 for GET and POST, and changes nothing", async () => {
    const dan = msg.rcpt[3]!;
    const good = tokens().unsubscribe(msg.id, dan.id);
    for (const bad of [good.slice(0, -1), good.slice(0, -1) + (good.endsWith("A") ? "B" : "A"), tokens().open(msg.id, dan.id)]) {
      await expectNotFound(await get(`/t/u/${bad}`));
      await expectNotFound(await post(`/t/u/${bad}`, "List-Unsubscribe=One-Click"));
    }
    expect((await suppressionsOf(f.key)).map((s) => s.address)).not.toContain(dan.address);
  });
});

describe("events, logs and metrics", () => {
  test("/v1/events filters by the new types; the message view shows the unsubscribe option", async () => {
    const res = await f.call("GET", "/v1/events?type=clicked,opened");
    const types = new Set(((await res.json()) as { events: EventJson[] }).events.map((e) => e.type));
    expect([...types].sort()).toEqual(["clicked", "opened"]);
    const m = (await (await f.call("GET", `/v1/messages/${msg.id}`)).json()) as { options: Record<string, boolean> };
    expect(m.options.unsubscribe).toBe(true);
  });

  test("another user sees none of these events", async () => {
    const key = await f.addUser("stranger");
    expect((await f.call("GET", `/v1/messages/${msg.id}`, undefined, { key })).status).toBe(404);
    const res = await f.call("GET", "/v1/events?type=clicked,opened,unsubscribed", undefined, { key });
    expect(((await res.json()) as { events: unknown[] }).events).toEqual([]);
  });

  test("each recorded event writes one mail-log line, and /metrics counts them", async () => {
    const lines = f.logs.filter((l) => l.event === "tracking");
    expect(lines.filter((l) => l.type === "unsubscribed").map((l) => l.recipient)).toEqual(["ann@dest.example", "bob@dest.example", "cat@dest.example"]);
    expect(lines.find((l) => l.type === "clicked")).toMatchObject({ queue_id: msg.id, url: expect.stringContaining("https://"), client_ip: "127.0.0.1" });
    const metrics = await (await get("/metrics")).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(metrics)?.[1]);
    expect(value("outpost_tracking_clicks_total")).toBe(lines.filter((l) => l.type === "clicked").length);
    expect(value("outpost_tracking_opens_total")).toBe(2);
    expect(value("outpost_tracking_unsubscribes_total")).toBe(3);
    expect(metrics).toMatch(/^outpost_tracking_invalid_tokens_total\{kind="click"\} [1-9]/m);
  });
});

describe("tracking needs http.public_url", () => {
  test("without one, the API answers 400 naming the option as written, SMTP 554 5.3.3, and nothing is queued", async () => {
    const g = await startApi(`[http]\nlisten = "127.0.0.1:0"\npublic_url = ""\n[smtp]\nlisten = ["127.0.0.1:0"]\ntrusted_networks = ["127.0.0.42"]\n`);
    try {
      for (const field of ["clicktracking", "trackclicks", "openstracking", "TrackOpens", "unsubscribe", "listunsubscribe"]) {
        const res = await g.call("POST", "/v1/send", { envelope: "a@example.com", recipient: "b@example.org", body: "Subject: s\r\n\r\nx\r\n", [field]: true });
        expect(res.status).toBe(400);
        const e = ((await res.json()) as { error: { field: string; message: string } }).error;
        expect([e.field, e.message]).toEqual([field, expect.stringContaining("http.public_url")]);
      }
      const ok = await g.call("POST", "/v1/send", { envelope: "a@example.com", recipient: "b@example.org", body: "Subject: s\r\n\r\nx\r\n", clicktracking: false });
      expect(ok.status).toBe(202);
      for (const header of ["X-Outpost-Track-Clicks", "X-Outpost-Track-Opens", "X-Outpost-Unsubscribe"]) {
        const r = await sendOverSmtp(g.rt.smtp!.addresses()[0]!.port, "a@example.com", ["b@example.org"], `${header}: yes\r\nSubject: s\r\n\r\nt\r\n`, "127.0.0.42");
        expect(r.data).toMatch(new RegExp(`^554 5\\.3\\.3 .*${header}.*http\\.public_url`));
      }
      expect(g.rt.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM messages").get()!.n).toBe(1);
    } finally {
      await g.stop();
    }
  });

  test("serve refuses a [tracking] default that needs it, exit 2 naming the key", () => {
    const d = tempDir();
    try {
      const file = join(d.path, "outpost.toml");
      writeFileSync(file, `data_dir = "${d.path}/data"\n[http]\npublic_url = ""\n[tracking]\nunsubscribe = true\n`);
      const r = runCli(d.path, ["serve", "--config", file]);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`${file}: tracking.unsubscribe: needs http.public_url`);
    } finally {
      d.cleanup();
    }
  });
});
