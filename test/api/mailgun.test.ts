/**
 * Mailgun's API on outpost, driven by Mailgun's own Node client (mailgun.js, unmodified, with the built-in
 * FormData) pointed at outpost's listener: form and MIME messages arrive at a real receiver (the fake MX, by a
 * static route) as their parameters describe, show in GET /v1/messages, and refusals come back as Mailgun's.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Mailgun from "mailgun.js";
import type { FakeMx } from "../helpers/fake-mx.ts";
import { arrivedAt, listedMessages, startApiToMx, TRACK_URL, type ApiFixture } from "./fixture.ts";

let f: ApiFixture;
let mx: FakeMx;
let stopAll: () => Promise<void>;

beforeAll(async () => {
  ({ f, mx, stop: stopAll } = await startApiToMx({ tracking: true, delivery: `retry = ["1s"]` }));
});
afterAll(() => stopAll());

function mailgun(key: string) {
  return new Mailgun(FormData).client({ username: "api", key, url: f.base });
}

const arrived = (subject: string, recipients?: number) => arrivedAt(mx, subject, recipients);
const listed = (query: string) => listedMessages(f, query);

const PDF = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 131 + 7) % 256));
const PNG = Buffer.from("89504e470d0a1a0a0000000d4948445200000001000000010806000000", "hex");

describe("POST /v3/{domain}/messages with mailgun.js", () => {
  test("a form message with files, inline image, headers, tag, variables and tracking arrives as described", async () => {
    const answer = await mailgun(f.key).messages.create("example.com", {
      from: "Shop <shop@example.com>",
      to: ["Bob <bob@dest.test>", "carol@dest.test"],
      cc: "dave@dest.test",
      bcc: "eve@dest.test",
      subject: "Mailgun order",
      text: "See https://shop.example/order/42",
      html: '<html><body><a href="https://shop.example/order/42">order</a><img src="cid:logo.png"></body></html>',
      attachment: [{ filename: "invoice.pdf", data: PDF, contentType: "application/pdf" }],
      inline: [{ filename: "logo.png", data: PNG }],
      "o:tag": "mg-order",
      "o:tracking": true,
      "h:X-Order": "42",
      "h:Reply-To": "help@example.com",
      "v:order": "42",
      "v:customer": "7",
    });
    expect(answer).toEqual({ status: 200, id: expect.stringMatching(/^<.+@.+>$/), message: "Queued. Thank you." });

    const { msg, to, mail } = await arrived("Mailgun order", 4);
    expect(msg.from).toBe("shop@example.com");
    expect(to).toEqual(["bob@dest.test", "carol@dest.test", "dave@dest.test", "eve@dest.test"]);
    expect(mail.messageId).toBe(answer.id);
    expect(msg.raw.toString("latin1")).not.toContain("eve@dest.test");
    expect(mail.headers.get("x-order")).toBe("42");
    expect(mail.replyTo?.value).toEqual([{ name: "", address: "help@example.com" }]);
    const pdf = mail.attachments.find((a) => a.filename === "invoice.pdf")!;
    expect(pdf.contentType).toBe("application/pdf");
    expect(Buffer.compare(pdf.content, PDF)).toBe(0);
    const logo = mail.attachments.find((a) => a.filename === "logo.png")!;
    expect(logo.cid).toBe("logo.png");
    expect(logo.contentType).toBe("image/png");
    expect(Buffer.compare(logo.content, PNG)).toBe(0);
    expect(mail.html).toContain(`href="${TRACK_URL}/t/c/`);
    expect(mail.html).toContain(`${TRACK_URL}/t/o/`);

    const [m] = await listed("tag=mg-order");
    expect(m).toMatchObject({ tag: "mg-order", metadata: { order: "42", customer: "7" } });
  });

  test("o:tracking-clicks=no wins over o:tracking=yes: opens are tracked, links are not", async () => {
    await mailgun(f.key).messages.create("example.com", {
      from: "shop@example.com", to: "t@dest.test", subject: "clicks off", html: '<a href="https://shop.example/x">x</a>',
      "o:tracking": "yes", "o:tracking-clicks": "no",
    });
    const { mail } = await arrived("clicks off");
    expect(mail.html).toContain('href="https://shop.example/x"');
    expect(mail.html).toContain(`${TRACK_URL}/t/o/`);
  });

  test("an urlencoded form is taken too (recipients comma-separated)", async () => {
    const res = await fetch(`${f.base}/v3/example.com/messages`, {
      method: "POST",
      headers: { authorization: `Basic ${btoa(`api:${f.key}`)}` },
      body: new URLSearchParams({ from: "shop@example.com", to: "u1@dest.test, u2@dest.test", subject: "urlencoded", text: "hi" }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id: expect.stringMatching(/^<.+>$/), message: "Queued. Thank you." });
    expect((await arrived("urlencoded", 2)).to).toEqual(["u1@dest.test", "u2@dest.test"]);
  });
});

describe("POST /v3/{domain}/messages.mime with mailgun.js", () => {
  test("the MIME message goes to the `to` addresses with its own bytes, its tag and variables recorded", async () => {
    const mime =
      "From: Shop <shop@example.com>\r\nTo: list@dest.test\r\nSubject: Mime via mailgun\r\nMIME-Version: 1.0\r\n" +
      "Content-Type: text/plain; charset=utf-8\r\n\r\nLine one.\r\n.leading dot\r\n";
    const answer = await mailgun(f.key).messages.create("example.com", {
      to: ["m1@dest.test", "m2@dest.test"], message: Buffer.from(mime), "o:tag": "mg-mime", "v:batch": "3",
    });
    expect(answer).toMatchObject({ status: 200, message: "Queued. Thank you." });
    const { msg, to, mail } = await arrived("Mime via mailgun", 2);
    expect(msg.from).toBe("shop@example.com");
    expect(to).toEqual(["m1@dest.test", "m2@dest.test"]);
    expect(msg.raw.toString()).toContain("\r\n\r\nLine one.\r\n.leading dot\r\n");
    expect(mail.messageId).toBe(answer.id);
    const [m] = await listed("tag=mg-mime");
    expect(m).toMatchObject({ metadata: { batch: "3" } });
  });
});

describe("Mailgun's refusals", () => {
  test("a wrong key is 401 Forbidden, which the client reports as status 401 with details Forbidden", async () => {
    const e = await mailgun("op_wrong").messages.create("example.com", { from: "shop@example.com", to: "x@dest.test", text: "x" }).catch((err: unknown) => err);
    expect(e).toMatchObject({ status: 401, details: "Forbidden", type: "MailgunAPIError" });
  });

  test("a user name other than api is 401", async () => {
    const res = await fetch(`${f.base}/v3/example.com/messages`, {
      method: "POST", headers: { authorization: `Basic ${btoa(`admin:${f.key}`)}` }, body: new URLSearchParams({ from: "a@example.com" }),
    });
    expect(res.status).toBe(401);
    expect(await res.text()).toBe("Forbidden");
  });

  test("a domain that is not one of the user's sender domains is 403, for messages and messages.mime", async () => {
    const key = await f.addUser("restricted-mg", ["example.com", "*.example.org"]);
    const client = mailgun(key);
    const form = await client.messages.create("other.test", { from: "shop@example.com", to: "x@dest.test", text: "x" }).catch((e: unknown) => e);
    expect(form).toMatchObject({ status: 403, details: expect.stringContaining("other.test") });
    const mime = await client.messages.create("other.test", { to: "x@dest.test", message: Buffer.from("From: shop@example.com\r\n\r\nx") }).catch((e: unknown) => e);
    expect(mime).toMatchObject({ status: 403 });
    // a subdomain of a "*." entry is allowed
    const ok = await client.messages.create("news.example.org", { from: "shop@news.example.org", to: "x@dest.test", subject: "subdomain ok", text: "x" });
    expect(ok.message).toBe("Queued. Thank you.");
  });

  test("an option outpost does not have is refused naming it, never ignored", async () => {
    const client = mailgun(f.key);
    const cases: [Record<string, string | string[]>, string][] = [
      [{ "o:deliverytime": "Fri, 14 Oct 2033 23:10:10 -0000" }, "'o:deliverytime'"],
      [{ "o:testmode": "yes" }, "'o:testmode'"],
      [{ "o:tag": ["a", "b"] }, "'o:tag'"],
      [{ template: "welcome" }, "'template'"],
      [{ "o:tracking-clicks": "maybe" }, "'o:tracking-clicks'"],
    ];
    for (const [extra, named] of cases) {
      const e = await client.messages.create("example.com", { from: "shop@example.com", to: "x@dest.test", text: "x", ...extra }).catch((err: unknown) => err);
      expect(e).toMatchObject({ status: 400, details: expect.stringContaining(named) });
    }
    // messages.mime takes the message whole: its parts' parameters are refused, not dropped
    for (const extra of [{ cc: "c@dest.test" }, { subject: "s" }, { "h:X-A": "1" }]) {
      const e = await client.messages.create("example.com", { to: "x@dest.test", message: Buffer.from("From: a@example.com\r\n\r\nx"), ...extra }).catch((err: unknown) => err);
      expect(e).toMatchObject({ status: 400, details: expect.stringContaining("not a messages.mime parameter") });
    }
  });

  test("missing from or to, or an invalid address, is 400 naming Mailgun's parameter", async () => {
    const client = mailgun(f.key);
    expect(await client.messages.create("example.com", { to: "x@dest.test", text: "x" }).catch((e: unknown) => e)).toMatchObject({
      status: 400, details: "'from' parameter is missing",
    });
    expect(await client.messages.create("example.com", { from: "shop@example.com", text: "x" }).catch((e: unknown) => e)).toMatchObject({
      status: 400, details: "'to' parameter is missing",
    });
    expect(await client.messages.create("example.com", { from: "shop@example.com", to: "x@dest.test", cc: "broken", text: "x" }).catch((e: unknown) => e)).toMatchObject({
      status: 400, details: expect.stringMatching(/^'cc' .*broken/),
    });
    expect(
      await client.messages.create("example.com", { from: "shop@example.com", to: "x@dest.test", "h:Bad Name": "x", text: "x" }).catch((e: unknown) => e),
    ).toMatchObject({ status: 400, details: expect.stringContaining("'h:Bad Name'") });
  });
});

describe("Mailgun's routes in the API", () => {
  test("GET /openapi.json lists messages and messages.mime under the mailgun tag, with Basic auth and the form's parameters", async () => {
    const doc = (await (await fetch(`${f.base}/openapi.json`)).json()) as {
      paths: Record<string, { post?: { tags: string[]; security: unknown; requestBody: { content: Record<string, { schema: { properties: object } }> } } }>;
      components: { securitySchemes: Record<string, unknown> };
    };
    for (const path of ["/v3/{domain}/messages", "/v3/{domain}/messages.mime"]) {
      expect(doc.paths[path]?.post).toMatchObject({ tags: ["mailgun"], security: [{ mailgun: [] }] });
    }
    const form = doc.paths["/v3/{domain}/messages"]!.post!.requestBody.content["multipart/form-data"]!.schema;
    expect(Object.keys(form.properties)).toEqual(expect.arrayContaining(["from", "to", "attachment", "inline", "o:tag", "o:tracking-clicks"]));
    expect(doc.components.securitySchemes.mailgun).toMatchObject({ type: "http", scheme: "basic" });
  });

  test("a Mailgun route outpost lacks is a 404 in Mailgun's shape", async () => {
    const res = await fetch(`${f.base}/v3/example.com/events`, { headers: { authorization: `Basic ${btoa(`api:${f.key}`)}` } });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ message: expect.any(String) });
  });
});
