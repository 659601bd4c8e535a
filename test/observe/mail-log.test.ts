/**
 * The mail log tells one message's whole story: every line about it carries its queue id, its Message-ID and its
 * user by name, so `grep QUEUE_ID` on serve's output reads like a Postfix maillog (docs/logs.md).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { createKey } from "../../src/auth/keys.ts";
import { addUser } from "../../src/auth/users.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";
import { startReceiver, type Receiver } from "../helpers/webhook-receiver.ts";

let mx: FakeMx;
let hook: Receiver;
let rt: Runtime;
let dir: ReturnType<typeof tempDir>;
/** serve's stdout, line by line, as written */
const lines: string[] = [];
let apiKey: string;

beforeAll(async () => {
  mx = await startFakeMx({ host: "127.0.0.2" });
  hook = startReceiver({ secret: "hook-secret" });
  dir = tempDir("outpost-maillog-");
  const config = testConfig(dir.path, [
    `[http]`, `listen = "127.0.0.1:0"`,
    `[delivery]`, `retry = ["1s"]`,
    `[[delivery.route]]`, `domain = "*"`, `host = "127.0.0.2"`, `port = ${mx.port}`,
    `[[webhook]]`, `name = "app"`, `url = "${hook.url}"`, `events = ["deferred", "delivered"]`, `secret = "hook-secret"`,
  ].join("\n"));
  rt = (await startRuntime(config, createLogger("info", (l) => lines.push(l)))).rt;
  const shop = await addUser(rt.store.db, "shop", "shop-secret-1");
  apiKey = createKey(rt.store.db, shop.id, "test").key;
});

afterAll(async () => {
  await rt?.stop();
  await mx?.stop();
  await hook?.stop();
  dir?.cleanup();
});

/** `grep ID`, then each line parsed. */
const grep = (id: string) => lines.filter((l) => l.includes(id)).map((l) => JSON.parse(l) as Record<string, unknown>);

test("grep by queue id shows a message's story: accepted over SMTP, deferred once, delivered, each hook call, each line with user and Message-ID", async () => {
  mx.script.rcptDefault = "451 4.2.0 mailbox busy, try again later";
  const t = nodemailer.createTransport({ host: "127.0.0.1", port: rt.smtp!.addresses()[0]!.port, secure: false, ignoreTLS: true, auth: { user: "shop", pass: "shop-secret-1" } });
  let queueId: string;
  try {
    const info = await t.sendMail({
      envelope: { from: "shop@shop.example", to: ["ann@dest.test"] },
      raw: "From: shop@shop.example\r\nTo: ann@dest.test\r\nMessage-ID: <story-1@shop.example>\r\nSubject: the story\r\n\r\nhi\r\n",
    });
    queueId = /queued as (\S+)/.exec(info.response)![1]!;
  } finally {
    t.close();
  }
  await waitFor(() => grep(queueId).some((l) => l.event === "delivery" && l.status === "deferred"), 10_000, "the first attempt to be deferred");
  mx.script.rcptDefault = undefined;
  await waitFor(() => grep(queueId).some((l) => l.event === "delivery" && l.status === "delivered"), 10_000, "the retry to deliver");
  await waitFor(() => grep(queueId).filter((l) => l.event === "webhook_delivered").length === 2, 10_000, "both hook calls");

  const story = grep(queueId);
  expect(story.map((l) => (l.event === "delivery" ? `delivery ${l.status}` : l.event))).toEqual([
    "smtp_message", "delivery deferred", expect.stringMatching(/^(delivery delivered|webhook_delivered)$/),
    expect.stringMatching(/^(delivery delivered|webhook_delivered)$/), expect.stringMatching(/^(delivery delivered|webhook_delivered)$/),
  ]);
  for (const l of story) {
    expect(l.queue_id, String(l.event)).toBe(queueId);
    expect(l.user, String(l.event)).toBe("shop");
  }
  for (const l of story.filter((s) => s.event !== "webhook_delivered")) expect(l.message_id, String(l.event)).toBe("<story-1@shop.example>");
  const [deferred, delivered] = story.filter((l) => l.event === "delivery");
  expect(deferred).toMatchObject({ recipient: "ann@dest.test", attempts: 1, dsn: "4.2.0", reply: expect.stringMatching(/^451 /), next_attempt_at: expect.any(String) });
  expect(delivered).toMatchObject({ recipient: "ann@dest.test", attempts: 2, status: "delivered", mx: expect.any(String), delay_ms: expect.any(Number) });
  expect(story.filter((l) => l.event === "webhook_delivered").map((l) => l.type).sort()).toEqual(["deferred", "delivered"]);
}, 30_000);

test("a message sent through the API opens its story with api_message, naming the user and the Message-ID", async () => {
  const res = await fetch(`http://127.0.0.1:${rt.http!.port}/v1/send`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ envelope: "shop@shop.example", from: "shop@shop.example", to: "bob@dest.test", subject: "via the API", text: "hi" }),
  });
  expect(res.status, await res.clone().text()).toBe(202);
  const { id, message_id } = (await res.json()) as { id: string; message_id: string };
  expect(message_id).toMatch(/^<.+@outpost\.test>$/);
  await waitFor(() => grep(id).some((l) => l.event === "delivery"), 10_000, "delivery");
  const story = grep(id);
  expect(story[0]).toMatchObject({ event: "api_message", queue_id: id, message_id, user: "shop", recipients: ["bob@dest.test"] });
  expect(story.find((l) => l.event === "delivery")).toMatchObject({ status: "delivered", message_id, user: "shop" });
});
