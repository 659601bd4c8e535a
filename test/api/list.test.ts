/**
 * GET /v1/messages: the caller's messages newest first, each filter, the cursor across messages sent while paging,
 * another user's messages out of sight, and a 400 naming each bad parameter.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { FakeMx } from "../helpers/fake-mx.ts";
import { waitFor } from "../helpers/harness.ts";
import { errorOf, startApiToMx, type ApiFixture } from "./fixture.ts";

interface Listed {
  id: string;
  created_at: string;
  tag: string | null;
  recipients: { address: string; status: string }[];
}
interface Page {
  messages: Listed[];
  next_cursor: string | null;
}

let mx: FakeMx;
let f: ApiFixture;
let key: string;
let otherKey: string;
let stopAll: () => Promise<void>;
beforeAll(async () => {
  // nobody@reject.test is refused (bounced), any other address delivered
  ({ f, mx, stop: stopAll } = await startApiToMx({ script: { rcpt: { "nobody@reject.test": "550 5.1.1 no such user" } } }));
  key = await f.addUser("lister");
  otherKey = await f.addUser("other");
});
afterAll(() => stopAll());

async function send(to: string | string[], extra: Record<string, unknown> = {}, as = key): Promise<string> {
  const res = await f.call("POST", "/v1/send", { from: "app@example.com", to, subject: "x", text: "x", ...extra }, { key: as });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

async function list(query = "", as = key): Promise<Page> {
  const res = await f.call("GET", `/v1/messages${query}`, undefined, { key: as });
  expect(res.status).toBe(200);
  return (await res.json()) as Page;
}

const ids = (p: Page) => p.messages.map((m) => m.id);

describe("GET /v1/messages", () => {
  let a: string, b: string, c: string;
  beforeAll(async () => {
    a = await send("Ann@Example.ORG", { tag: "welcome" });
    b = await send(["bob@example.org", "ann@example.org"], { tag: "receipt" });
    c = await send("carol@example.org", { tag: "welcome" });
    await send("mine-not-yours@example.org", {}, otherKey);
  });

  test("lists only the caller's messages, newest first, as the message view shows them without events", async () => {
    const p = await list();
    expect(ids(p)).toEqual([c, b, a]);
    expect(p.next_cursor).toBeNull();
    expect(p.messages[1]).toMatchObject({ tag: "receipt", recipients: [{ address: "bob@example.org" }, { address: "ann@example.org" }] });
    expect(p.messages[0]).not.toHaveProperty("recipients.0.events");
    expect(ids(await list("", otherKey))).toHaveLength(1);
  });

  test("tag= lists that tag's messages", async () => {
    expect(ids(await list("?tag=welcome"))).toEqual([c, a]);
    expect(ids(await list("?tag=none"))).toEqual([]);
  });

  test("recipient= matches the address as one mailbox, however it is spelt", async () => {
    expect(ids(await list("?recipient=ANN%40example.org"))).toEqual([b, a]);
    expect(ids(await list(`?recipient=${encodeURIComponent('"ann"@EXAMPLE.org')}`))).toEqual([b, a]);
    expect(ids(await list("?recipient=mine-not-yours%40example.org"))).toEqual([]);
  });

  test("status= lists messages with a recipient in that status", async () => {
    const bounced = await send(["fine@example.org", "nobody@reject.test"]);
    await waitFor(async () => (ids(await list("?status=bounced")).includes(bounced) ? true : null), 5000, "the bounce");
    expect(ids(await list("?status=bounced"))).toEqual([bounced]);
    await waitFor(async () => ((await list("?status=queued")).messages.length === 0 ? true : null), 5000, "every message settled");
    expect(ids(await list("?status=delivered"))).toContain(bounced);
    expect(ids(await list("?status=suppressed"))).toEqual([]);
  });

  test("since= and until= bound the creation time, as RFC 3339 or unix seconds", async () => {
    const all = (await list()).messages;
    const times = all.map((m) => Date.parse(m.created_at));
    const newest = Math.max(...times);
    const later = await waitFor(async () => {
      const id = await send("later@example.org");
      const m = (await list()).messages[0]!;
      return Date.parse(m.created_at) > newest ? id : null;
    }, 5000, "a message created in a later millisecond");
    const laterTime = Date.parse((await list()).messages[0]!.created_at);
    expect(ids(await list(`?since=${new Date(laterTime).toISOString()}`))).toEqual([later]);
    expect(ids(await list(`?until=${new Date(laterTime).toISOString()}`))).not.toContain(later);
    expect(ids(await list(`?since=${laterTime / 1000}`))).toEqual([later]);
    expect(ids(await list("?until=0"))).toEqual([]);
  });

  test("the cursor pages through, and messages sent while paging shift nothing", async () => {
    const before = ids(await list("?limit=500"));
    const seen: string[] = [];
    let page = await list("?limit=2");
    const sentMeanwhile: string[] = [];
    for (;;) {
      seen.push(...ids(page));
      if (page.next_cursor === null) break;
      sentMeanwhile.push(await send("meanwhile@example.org"));
      page = await list(`?limit=2&cursor=${encodeURIComponent(page.next_cursor)}`);
    }
    expect(seen).toEqual(before);
    expect(ids(await list(`?limit=${sentMeanwhile.length}`))).toEqual([...sentMeanwhile].reverse());
  });

  test("filters and the cursor combine", async () => {
    const first = await list("?tag=welcome&limit=1");
    expect(ids(first)).toEqual([c]);
    const second = await list(`?tag=welcome&limit=1&cursor=${encodeURIComponent(first.next_cursor!)}`);
    expect(ids(second)).toEqual([a]);
    expect(second.next_cursor).toBeNull();
  });

  const bad: [string, string][] = [
    ["?status=sent", "status"],
    ["?recipient=not-an-address", "recipient"],
    ["?since=yesterday", "since"],
    ["?until=2026-13-45", "until"],
    ["?limit=0", "limit"],
    ["?limit=501", "limit"],
    ["?cursor=bm9wZQ", "cursor"],
    ["?stauts=queued", "stauts"],
  ];
  for (const [query, field] of bad) {
    test(`${query} is a 400 naming ${field}`, async () => {
      const e = await errorOf(await f.call("GET", `/v1/messages${query}`, undefined, { key }));
      expect(e).toMatchObject({ status: 400, code: "invalid_request", field });
    });
  }

  test("the key may still come as ?access_token=", async () => {
    const res = await f.call("GET", `/v1/messages?access_token=${key}&limit=1`, undefined, { key: null });
    expect(res.status).toBe(200);
  });
});
