/**
 * A send as an application coming from a hosted service writes it, delivered to a fake MX: the envelope sender
 * taken from the author, the RFC Message-ID in the answer, tag and metadata on the message and on every one of its
 * events (over the API and as X-Outpost-* headers over SMTP, which never reach the receiver), and Reply-To.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { FakeMx } from "../helpers/fake-mx.ts";
import { waitFor } from "../helpers/harness.ts";
import { hasCommand, run } from "../smtp/fixture.ts";
import { errorOf, startApiToMx, type ApiFixture } from "./fixture.ts";

interface EventJson {
  type: string;
  message_id: string;
  recipient: string | null;
  tag: string | null;
  metadata: Record<string, string>;
}
interface MessageJson {
  id: string;
  message_id: string | null;
  envelope: string;
  tag: string | null;
  metadata: Record<string, string>;
  recipients: { address: string; status: string; events: EventJson[] }[];
}
interface SendAnswer {
  id: string;
  message_id: string;
  recipients: { address: string; id: string; status: string }[];
}

let mx: FakeMx;
let f: ApiFixture;
let stopAll: () => Promise<void>;
beforeAll(async () => {
  ({ f, mx, stop: stopAll } = await startApiToMx());
});
afterAll(() => stopAll());

async function send(fields: Record<string, unknown>): Promise<SendAnswer> {
  const res = await f.call("POST", "/v1/send", fields);
  const body = (await res.json()) as SendAnswer;
  if (res.status !== 202) throw new Error(`send answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/** The message once every recipient is delivered. */
async function delivered(id: string): Promise<MessageJson> {
  return await waitFor(async () => {
    const m = (await (await f.call("GET", `/v1/messages/${id}`)).json()) as MessageJson;
    return m.recipients.every((r) => r.status === "delivered") ? m : null;
  }, 10_000, `message ${id} delivered`);
}

const receivedBy = (address: string) => waitFor(() => mx.messages.find((m) => m.to.includes(address)), 10_000, `delivery to ${address}`);

describe("the envelope sender defaults to the author", () => {
  test("from, to, subject and text alone are sent, with MAIL FROM the address of from", async () => {
    const answer = await send({ from: "Ann <ann@example.com>", to: "four@example.org", subject: "Hi", text: "Four fields." });
    const got = await receivedBy("four@example.org");
    expect(got.from).toBe("ann@example.com");
    expect(got.raw.toString()).toContain("From: Ann <ann@example.com>");
    const m = await delivered(answer.id);
    expect(m.envelope).toBe("ann@example.com");
  });

  test("a MIME body is sent from its Sender:, else its From:", async () => {
    await send({ body: "From: a@example.com, b@example.com\r\nSender: list@example.com\r\nTo: s1@example.org\r\nSubject: x\r\n\r\nx\r\n" });
    await send({ body: "From: Only <only@example.com>\r\nTo: s2@example.org\r\nSubject: x\r\n\r\nx\r\n" });
    expect((await receivedBy("s1@example.org")).from).toBe("list@example.com");
    expect((await receivedBy("s2@example.org")).from).toBe("only@example.com");
  });

  test("without an envelope, a body with several From addresses and no Sender is a 400 naming envelope", async () => {
    const e = await errorOf(await f.call("POST", "/v1/send", { body: "From: a@example.com, b@example.com\r\nTo: x@example.org\r\n\r\nx\r\n" }));
    expect(e).toMatchObject({ status: 400, field: "envelope" });
    expect(e.message).toContain("Sender");
  });

  test("the sender-domain rules still apply to the defaulted envelope (403 naming envelope)", async () => {
    const key = await f.addUser("restricted", ["example.net"]);
    const e = await errorOf(await f.call("POST", "/v1/send", { from: "ann@example.com", to: "x@example.org", text: "x" }, { key }));
    expect(e).toMatchObject({ status: 403, field: "envelope" });
  });
});

describe("the RFC Message-ID", () => {
  test("the 202 and the message view carry the Message-ID the receiver gets, with its angle brackets", async () => {
    const answer = await send({ from: "ann@example.com", to: "mid@example.org", subject: "x", text: "x" });
    expect(answer.message_id).toMatch(/^<[^<>\s]+@[^<>\s]+>$/);
    const got = await receivedBy("mid@example.org");
    expect(got.raw.toString()).toContain(`Message-ID: ${answer.message_id}`);
    expect((await delivered(answer.id)).message_id).toBe(answer.message_id);
  });

  test("a body's own Message-ID is kept and answered", async () => {
    const answer = await send({ body: "From: ann@example.com\r\nTo: own@example.org\r\nMessage-ID: <own.1@example.com>\r\n\r\nx\r\n" });
    expect(answer.message_id).toBe("<own.1@example.com>");
  });
});

describe("tag and metadata", () => {
  test("are stored, shown in the message view and carried by every event of the message", async () => {
    const metadata = { order_id: "A-1042", "customer-id": "77" };
    const answer = await send({ from: "ann@example.com", to: ["t1@example.org", "t2@example.org"], subject: "x", text: "x", tag: "welcome", metadata });
    const m = await delivered(answer.id);
    expect(m).toMatchObject({ tag: "welcome", metadata });
    for (const r of m.recipients) {
      expect(r.events.map((e) => e.type)).toEqual(["queued", "delivered"]);
      for (const e of r.events) expect(e).toMatchObject({ tag: "welcome", metadata });
    }
    const page = (await (await f.call("GET", `/v1/events?message_id=${answer.id}`)).json()) as { events: EventJson[] };
    expect(page.events.map((e) => `${e.type} ${e.recipient}`).sort()).toEqual([
      "delivered t1@example.org",
      "delivered t2@example.org",
      "queued t1@example.org",
      "queued t2@example.org",
    ]);
    for (const e of page.events) expect(e).toMatchObject({ message_id: answer.id, tag: "welcome", metadata });
  });

  test("a message without them shows tag null and metadata {} on the message and its events", async () => {
    const answer = await send({ from: "ann@example.com", to: "plain@example.org", subject: "x", text: "x" });
    const m = await delivered(answer.id);
    expect(m).toMatchObject({ tag: null, metadata: {} });
    for (const e of m.recipients[0]!.events) expect(e).toMatchObject({ tag: null, metadata: {} });
  });

  test("a form takes metadata as metadata[KEY] fields", async () => {
    const form = new URLSearchParams({ from: "ann@example.com", to: "form@example.org", text: "x", tag: "t", "metadata[a]": "1", "metadata[b]": "2" });
    const res = await f.call("POST", "/v1/send", form);
    expect(res.status).toBe(202);
    const m = (await (await f.call("GET", `/v1/messages/${((await res.json()) as SendAnswer).id}`)).json()) as MessageJson;
    expect(m).toMatchObject({ tag: "t", metadata: { a: "1", b: "2" } });
  });

  const base = { from: "ann@example.com", to: "x@example.org", text: "x" };
  const cases: [string, Record<string, unknown>, string][] = [
    ["a tag over 100 characters", { tag: "t".repeat(101) }, "tag"],
    ["a tag with a control character", { tag: "a\nb" }, "tag"],
    ["a tag that is not a string", { tag: 5 }, "tag"],
    ["a metadata value that is not a string", { metadata: { order_id: 42 } }, "metadata.order_id"],
    ["a metadata key with a space", { metadata: { "order id": "1" } }, "metadata.order id"],
    ["a metadata key over 40 characters", { metadata: { ["k".repeat(41)]: "1" } }, `metadata.${"k".repeat(41)}`],
    ["a metadata value over 500 characters", { metadata: { note: "n".repeat(501) } }, "metadata.note"],
    ["more than 20 metadata keys", { metadata: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, "v"])) }, "metadata"],
    ["metadata that is not an object", { metadata: "a=1" }, "metadata"],
  ];
  for (const [what, fields, field] of cases) {
    test(`${what} is a 400 naming ${field}`, async () => {
      const e = await errorOf(await f.call("POST", "/v1/send", { ...base, ...fields }));
      expect(e).toMatchObject({ status: 400, code: "invalid_request", field });
    });
  }
});

describe("reply_to", () => {
  test("becomes the Reply-To of the composed message", async () => {
    await send({ from: "ann@example.com", to: "rt@example.org", text: "x", reply_to: "Support <support@example.com>" });
    expect((await receivedBy("rt@example.org")).raw.toString()).toContain("Reply-To: Support <support@example.com>");
  });

  test("an invalid address is a 400 naming reply_to", async () => {
    expect(await errorOf(await f.call("POST", "/v1/send", { from: "ann@example.com", to: "x@example.org", text: "x", reply_to: "nobody" }))).toMatchObject({
      status: 400,
      field: "reply_to",
    });
  });

  test("with a MIME body it is a 400 (the body has its own headers)", async () => {
    const e = await errorOf(await f.call("POST", "/v1/send", { body: "From: a@example.com\r\nTo: b@example.org\r\n\r\nx", reply_to: "c@example.com" }));
    expect(e).toMatchObject({ status: 400, field: "reply_to" });
  });
});

describe.skipIf(!hasCommand("swaks"))("over SMTP", () => {
  const smtp = (extra: string[], to: string) =>
    run(["swaks", "--server", `127.0.0.1:${f.rt.smtp!.addresses()[0]!.port}`, "--tls", "--auth", "PLAIN", "--auth-user", "admin",
      "--auth-password", f.password, "--from", "ann@example.com", "--to", to, "--header", "Subject: smtp", "--body", "hi", ...extra]);

  test("X-Outpost-Tag and X-Outpost-Metadata-KEY label the message and its events, and are removed before delivery", async () => {
    const r = await smtp(["--add-header", "X-Outpost-Tag: receipts", "--add-header", "X-Outpost-Metadata-order_id: A-7",
      "--add-header", "X-Outpost-Metadata-Shop: north"], "smtp-tag@example.org");
    expect(r.code).toBe(0);
    const got = await receivedBy("smtp-tag@example.org");
    expect(got.raw.toString()).not.toMatch(/^X-Outpost-/im);
    const event = await waitFor(async () => {
      const page = (await (await f.call("GET", "/v1/events?type=delivered&limit=1000")).json()) as { events: EventJson[] };
      return page.events.find((e) => e.recipient === "smtp-tag@example.org");
    }, 10_000, "the delivered event");
    expect(event).toMatchObject({ tag: "receipts", metadata: { order_id: "A-7", Shop: "north" } });
    const m = (await (await f.call("GET", `/v1/messages/${event!.message_id}`)).json()) as MessageJson;
    expect(m).toMatchObject({ tag: "receipts", metadata: { order_id: "A-7", Shop: "north" } });
  });

  test("a bad X-Outpost-Metadata key is refused at the end of DATA with 554 5.6.0", async () => {
    const r = await smtp(["--add-header", "X-Outpost-Metadata-bad.key: 1"], "smtp-bad@example.org");
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/554 5\.6\.0 X-Outpost-Metadata-bad\.key/);
  });
});
