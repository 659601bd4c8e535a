/**
 * DATA through outpost's listener, read by smtp/data-scan.ts in place of smtp-server's own pass: 50 KiB
 * bodies full of lines that start with a dot, sent raw (our dot-stuffing, in segments split at awkward places,
 * the next transaction pipelined behind the final dot) and by nodemailer, come out of the queue unstuffed.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { addTestUser, messageRow, queueIdIn, RawSmtp, startOutpost, type Outpost } from "./fixture.ts";

let o: Outpost;

beforeAll(async () => {
  o = await startOutpost();
  await addTestUser(o, "carol", "carol-pass-9");
});

afterAll(async () => {
  await o?.stop();
});

/** About 50 KiB of CRLF lines, every fifth starting with one or two dots, one line a single dot. */
function dottedBody(tag: string): string {
  const lines = [
    "From: carol@example.org", "To: dave@example.net", `Subject: dots ${tag}`, `Message-ID: <${tag}@client.example>`,
    "Date: Mon, 07 Dec 2026 01:00:00 +0000", "",
  ];
  for (let i = 0; lines.join("\r\n").length < 51_200; i++) {
    lines.push(i % 5 === 0 ? `${".".repeat(1 + (i % 2))}line ${i} starts with a dot` : i === 7 ? "." : `line ${i} ${"x".repeat(60)}`);
  }
  return `${lines.join("\r\n")}\r\n`;
}

const stuffed = (body: string) => body.replace(/^\./gm, "..");

function storedBody(reply: string): string {
  const body = Buffer.from(messageRow(o, queueIdIn(reply))!.body).toString("latin1");
  return body.slice(body.indexOf("\r\nFrom: ") + 2);
}

test("50 KiB bodies with dot-stuffed lines, sent raw in awkwardly split segments, are stored unstuffed and the pipelined commands after the final dot run", async () => {
  const c = await RawSmtp.connect(o.port);
  expect(await c.reply()).toMatch(/^220 /);
  c.write("EHLO client.example\r\n");
  expect(await c.reply()).toMatch(/^250-/);
  c.write(`AUTH PLAIN ${Buffer.from("\0carol\0carol-pass-9").toString("base64")}\r\n`);
  expect(await c.reply()).toMatch(/^235 /);
  for (const tag of ["a", "b", "c"]) {
    const body = dottedBody(tag);
    c.write("MAIL FROM:<carol@example.org>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\n");
    expect(await c.reply()).toMatch(/^250 /);
    expect(await c.reply()).toMatch(/^250 /);
    expect(await c.reply()).toMatch(/^354 /);
    // split inside a stuffed dot, then inside the terminator; the next command rides behind the final dot
    const wire = Buffer.from(`${stuffed(body)}.\r\nNOOP\r\n`, "latin1");
    const cuts = [wire.indexOf("\r\n..") + 3, wire.length - 9, wire.length - 8];
    for (const [i, cut] of [0, ...cuts].entries()) {
      c.write(wire.subarray(cut, cuts[i] ?? wire.length));
      await new Promise((r) => setImmediate(r));
    }
    const queued = await c.reply();
    expect(queued).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect(await c.reply()).toMatch(/^250 /); // the NOOP
    expect(storedBody(queued)).toBe(body);
  }
  c.write("QUIT\r\n");
  expect(await c.reply()).toMatch(/^221 /);
  c.close();
});

test("a 50 KiB body with lines starting with dots, sent by nodemailer, is stored as written", async () => {
  const t = nodemailer.createTransport({
    host: "127.0.0.1", port: o.port, secure: false, auth: { user: "carol", pass: "carol-pass-9" }, tls: { rejectUnauthorized: false },
  });
  const body = dottedBody("nodemailer");
  const info = await t.sendMail({ envelope: { from: "carol@example.org", to: ["dave@example.net"] }, raw: body });
  t.close();
  expect(storedBody(info.response)).toBe(body);
});
