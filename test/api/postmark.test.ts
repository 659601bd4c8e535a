/**
 * Postmark's API on outpost, driven by Postmark's own Node client (postmark, unmodified) pointed at outpost's
 * listener: what it sends arrives at a real receiver (the fake MX, by a static route) as its fields describe,
 * shows in GET /v1/messages, and every refusal reaches the client as Postmark's error.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Errors, ServerClient } from "postmark";
import type { FakeMx } from "../helpers/fake-mx.ts";
import { arrivedAt, listedMessages, startApiToMx, TRACK_URL, type ApiFixture } from "./fixture.ts";

let f: ApiFixture;
let mx: FakeMx;
let client: ServerClient;
let stopAll: () => Promise<void>;

beforeAll(async () => {
  ({ f, mx, stop: stopAll } = await startApiToMx({ tracking: true, delivery: `retry = ["1s"]` }));
  client = postmarkClient(f.key);
});
afterAll(() => stopAll());

function postmarkClient(token: string): ServerClient {
  return new ServerClient(token, { requestHost: f.base.replace(/^http:\/\//, ""), useHttps: false });
}

const arrived = (subject: string, recipients?: number) => arrivedAt(mx, subject, recipients);
const listed = (query: string) => listedMessages(f, query);

const PDF = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37 + 11) % 256));
const PNG = Buffer.from("89504e470d0a1a0a0000000d4948445200000001000000010806000000", "hex");

describe("POST /email with Postmark's client", () => {
  test("a message with attachments, headers, tag, metadata and tracking arrives as its fields describe", async () => {
    const answer = await client.sendEmail({
      From: "Shop <shop@example.com>",
      To: "Bob <bob@dest.test>, carol@dest.test",
      Cc: "dave@dest.test",
      Bcc: "eve@dest.test",
      Subject: "Your order",
      HtmlBody: '<html><body><p>See <a href="https://shop.example/order/42?a=1&amp;b=2">your order</a>.</p><img src="cid:logo.png"></body></html>',
      TextBody: "See https://shop.example/order/42",
      ReplyTo: "Help <help@example.com>",
      Headers: [{ Name: "X-Order", Value: "42" }],
      Attachments: [
        { Name: "invoice.pdf", Content: PDF.toString("base64"), ContentType: "application/pdf", ContentID: null },
        { Name: "logo.png", Content: PNG.toString("base64"), ContentType: "image/png", ContentID: "cid:logo.png" },
      ],
      Tag: "order-confirmation",
      Metadata: { order: "42", customer: "7" },
      TrackOpens: true,
      TrackLinks: "HtmlAndText" as never, // the client's enum type, by its string value
      MessageStream: "outbound",
    });
    expect(answer).toEqual({
      To: "Bob <bob@dest.test>, carol@dest.test",
      SubmittedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      MessageID: expect.stringMatching(/^[0-9a-z]{20}$/),
      ErrorCode: 0,
      Message: "OK",
    });

    const { msg, to, mail } = await arrived("Your order", 4);
    expect(msg.from).toBe("shop@example.com");
    expect(to).toEqual(["bob@dest.test", "carol@dest.test", "dave@dest.test", "eve@dest.test"]);
    expect(mail.from?.value).toEqual([{ name: "Shop", address: "shop@example.com" }]);
    expect(mail.to && !Array.isArray(mail.to) ? mail.to.value.map((a) => a.address) : null).toEqual(["bob@dest.test", "carol@dest.test"]);
    expect(msg.raw.toString("latin1")).not.toContain("eve@dest.test");
    expect(mail.replyTo?.value).toEqual([{ name: "Help", address: "help@example.com" }]);
    expect(mail.headers.get("x-order")).toBe("42");
    const pdf = mail.attachments.find((a) => a.filename === "invoice.pdf")!;
    expect(pdf.contentType).toBe("application/pdf");
    expect(Buffer.compare(pdf.content, PDF)).toBe(0);
    const logo = mail.attachments.find((a) => a.filename === "logo.png")!;
    expect(logo.cid).toBe("logo.png");
    expect(Buffer.compare(logo.content, PNG)).toBe(0);
    // clicktracking and openstracking applied as it went out; the text part is sent as written
    expect(mail.html).toContain(`href="${TRACK_URL}/t/c/`);
    expect(mail.html).not.toContain("https://shop.example/order/42");
    expect(mail.html).toContain(`${TRACK_URL}/t/o/`);
    expect(mail.text).toContain("https://shop.example/order/42");

    const [listedMessage] = await listed("tag=order-confirmation");
    expect(listedMessage).toMatchObject({
      id: answer.MessageID,
      tag: "order-confirmation",
      metadata: { order: "42", customer: "7", message_stream: "outbound" },
    });
  });

  test("a message with a comma-separated To and no body text is still sent (Postmark's client sends null for unset fields)", async () => {
    const answer = await client.sendEmail({ From: "shop@example.com", To: "x@dest.test,y@dest.test", Subject: "Empty", TextBody: undefined });
    expect(answer.ErrorCode).toBe(0);
    expect((await arrived("Empty", 2)).to).toEqual(["x@dest.test", "y@dest.test"]);
  });

  test("a wrong token is Postmark's 401 with ErrorCode 10, which the client throws as InvalidAPIKeyError", async () => {
    const e = await postmarkClient("op_wrong").sendEmail({ From: "shop@example.com", To: "x@dest.test", Subject: "x", TextBody: "x" }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(Errors.InvalidAPIKeyError);
    expect(e).toMatchObject({ statusCode: 401, code: 10 });
  });

  test("a request without the token header is a 401 with ErrorCode 10 naming the header", async () => {
    const res = await fetch(`${f.base}/email`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ ErrorCode: 10, Message: expect.stringContaining("X-Postmark-Server-Token") });
  });

  test("a recipient on the suppression list is Postmark's inactive recipient: 406 when all are, named in Message when some are", async () => {
    expect((await f.call("POST", "/v1/suppressions", { address: "gone@dest.test" })).status).toBeLessThan(300);
    const all = await client.sendEmail({ From: "shop@example.com", To: "gone@dest.test", Subject: "inactive", TextBody: "x" }).catch((e: unknown) => e);
    expect(all).toBeInstanceOf(Errors.InactiveRecipientsError);
    expect(all).toMatchObject({ statusCode: 422, code: 406, recipients: ["gone@dest.test"] });

    const some = await client.sendEmail({ From: "shop@example.com", To: "gone@dest.test, here@dest.test", Subject: "some inactive", TextBody: "x" });
    expect(some).toMatchObject({ ErrorCode: 0, Message: "Message OK, but will not deliver to these inactive addresses: gone@dest.test." });
    const { msg } = await arrived("some inactive");
    expect(msg.to).toEqual(["here@dest.test"]);
  });

  test("a sender outside the user's sender domains is ErrorCode 400 (Postmark's sender signature not found)", async () => {
    const key = await f.addUser("restricted-pm", ["example.com"]);
    const e = await postmarkClient(key).sendEmail({ From: "a@elsewhere.test", To: "x@dest.test", Subject: "x", TextBody: "x" }).catch((err: unknown) => err);
    expect(e).toMatchObject({ statusCode: 422, code: 400, message: expect.stringContaining("'From'") });
  });

  test("a field outpost does not know, or a TrackLinks it cannot honour, is refused with ErrorCode 300 naming it", async () => {
    const unknown = await client.sendEmail({ From: "shop@example.com", To: "x@dest.test", TemplateAlias: "x" } as never).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(Errors.InvalidEmailRequestError);
    expect(unknown).toMatchObject({ statusCode: 422, code: 300, message: expect.stringContaining("'TemplateAlias'") });
    const textOnly = await client.sendEmail({ From: "shop@example.com", To: "x@dest.test", Subject: "x", TrackLinks: "TextOnly" as never }).catch((e: unknown) => e);
    expect(textOnly).toMatchObject({ code: 300, message: expect.stringContaining("TextOnly") });
    const badAddress = await client.sendEmail({ From: "shop@example.com", To: "x@dest.test, nobody", Subject: "x" }).catch((e: unknown) => e);
    expect(badAddress).toMatchObject({ code: 300, message: expect.stringMatching(/^Invalid 'To': .*nobody/) });
    const badBase64 = await client
      .sendEmail({ From: "shop@example.com", To: "x@dest.test", Subject: "x", Attachments: [{ Name: "a", Content: "!!", ContentType: "text/plain", ContentID: null }] })
      .catch((e: unknown) => e);
    expect(badBase64).toMatchObject({ code: 300, message: expect.stringContaining("'Attachments[0].Content'") });
  });

  test("a body that is not JSON is ErrorCode 409 (JSON required), unreadable JSON ErrorCode 402", async () => {
    const headers = { "x-postmark-server-token": f.key };
    const form = await fetch(`${f.base}/email`, { method: "POST", headers: { ...headers, "content-type": "application/x-www-form-urlencoded" }, body: "From=a" });
    expect(form.status).toBe(422);
    expect(((await form.json()) as { ErrorCode: number }).ErrorCode).toBe(409);
    const broken = await fetch(`${f.base}/email`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: "{nope" });
    expect(broken.status).toBe(422);
    expect(((await broken.json()) as { ErrorCode: number }).ErrorCode).toBe(402);
  });
});

describe("POST /email/batch with Postmark's client", () => {
  test("each message is answered in its place: accepted ones arrive, a refused one carries its ErrorCode, HTTP 200", async () => {
    const answers = await client.sendEmailBatch([
      { From: "shop@example.com", To: "b1@dest.test", Subject: "batch one", TextBody: "1", Tag: "batch", Metadata: { n: "1" } },
      { From: "shop@example.com", To: "not an address", Subject: "batch bad", TextBody: "2" },
      {
        From: "shop@example.com", To: "b3@dest.test", Subject: "batch three", HtmlBody: "<p>3</p>",
        Attachments: [{ Name: "n.bin", Content: PDF.toString("base64"), ContentType: "application/octet-stream", ContentID: null }],
      },
    ]);
    expect(answers as unknown[]).toEqual([
      { To: "b1@dest.test", SubmittedAt: expect.any(String), MessageID: expect.any(String), ErrorCode: 0, Message: "OK" },
      { ErrorCode: 300, Message: expect.stringContaining("'To'") },
      { To: "b3@dest.test", SubmittedAt: expect.any(String), MessageID: expect.any(String), ErrorCode: 0, Message: "OK" },
    ]);
    const [one, three] = await Promise.all([arrived("batch one"), arrived("batch three")]);
    expect(one.msg.to).toEqual(["b1@dest.test"]);
    expect(Buffer.compare(three.mail.attachments[0]!.content, PDF)).toBe(0);
    expect(mx.messages.some((m) => m.raw.toString().includes("batch bad"))).toBe(false);
    const [first] = await listed("tag=batch");
    expect(first).toMatchObject({ id: (answers[0] as { MessageID: string }).MessageID, metadata: { n: "1" } });
  });

  test("more than 500 messages is ErrorCode 410 and nothing is sent", async () => {
    const many = Array.from({ length: 501 }, (_, i) => ({ From: "shop@example.com", To: `m${i}@dest.test`, Subject: "too many", TextBody: "x" }));
    const e = await client.sendEmailBatch(many).catch((err: unknown) => err);
    expect(e).toMatchObject({ statusCode: 422, code: 410 });
    expect((await listed("recipient=m0@dest.test")).length).toBe(0);
  });
});

describe("Postmark's routes in the API", () => {
  test("GET /email is a 405 in Postmark's shape, with Allow; a Postmark endpoint outpost lacks is a 404", async () => {
    const get = await fetch(`${f.base}/email`, { headers: { "x-postmark-server-token": f.key } });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    expect(await get.json()).toEqual({ ErrorCode: 405, Message: expect.stringContaining("POST") });
    const template = await fetch(`${f.base}/email/withTemplate`, {
      method: "POST", headers: { "x-postmark-server-token": f.key, "content-type": "application/json" }, body: "{}",
    });
    expect(template.status).toBe(404);
    expect(((await template.json()) as { ErrorCode: number }).ErrorCode).toBe(404);
  });

  test("GET /openapi.json lists both routes under the postmark tag, with Postmark's message and the token header", async () => {
    const doc = (await (await fetch(`${f.base}/openapi.json`)).json()) as {
      paths: Record<string, { post?: { tags: string[]; security: unknown; requestBody: { content: Record<string, { schema: { properties?: object; items?: { properties: object } } }> } } }>;
      components: { securitySchemes: Record<string, unknown> };
    };
    for (const path of ["/email", "/email/batch"]) expect(doc.paths[path]?.post).toMatchObject({ tags: ["postmark"], security: [{ postmark: [] }] });
    const single = doc.paths["/email"]!.post!.requestBody.content["application/json"]!.schema;
    expect(Object.keys(single.properties!)).toContain("TrackLinks");
    expect(Object.keys(doc.paths["/email/batch"]!.post!.requestBody.content["application/json"]!.schema.items!.properties)).toContain("Attachments");
    expect(doc.components.securitySchemes.postmark).toMatchObject({ type: "apiKey", in: "header", name: "X-Postmark-Server-Token" });
  });
});
