/**
 * Runs every test/dialogs/*.smtp file against one outpost over a raw socket.
 *
 * File format (one step a line; blank lines and `#` comments ignored):
 *   > TEXT            send TEXT + CRLF (escapes: \r \n \0 \t \\ \xHH)
 *   >> TEXT           send TEXT exactly, nothing appended (same escapes)
 *   >repeat N TEXT    send TEXT + CRLF, N times
 *   < REGEX           read the next whole reply; it must match (flag m: ^ and $ per line)
 *   ~ REGEX           the reply just read must also match
 *   !~ REGEX          the reply just read must NOT match
 *   @client IP        (first line) connect from this local address (default 127.0.0.1)
 *   @starttls         upgrade the socket to TLS (after the 220 to STARTTLS)
 *   @reconnect        close and connect again from the same client address
 *   @pause MS         wait (to split a write into separate TCP segments)
 *   = closed          the server must close the connection
 *   = queued SENDER N     (SENDER `<>` is the null sender) exactly N messages with this envelope sender are in the queue
 *   = recipients SENDER N the one message from SENDER has N recipient rows
 *   = rcpts SENDER A,B    … and these recipient addresses (sorted, comma-separated)
 *   = body SENDER REGEX   the stored body of the one message from SENDER matches (latin1; escapes as above)
 *   = nobody SENDER REGEX ... does not match
 *   = inbound KIND N      exactly N messages of this kind (postmaster, abuse, unparsed …) are kept at the bounce domain
 * After the last step nothing may be left unread: an extra reply means a command ran that should not have.
 *
 * Loopback: this listener treats only 127.0.0.1 as loopback, so a dialog with `@client 127.0.0.2`
 * (or .3, .4 …) plays a remote client for auth_requires_tls. Each dialog uses its own client address
 * where it can be blocked or counted, so dialogs do not disturb each other.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CredentialChecker } from "../../src/auth/users.ts";
import { InboundStore } from "../../src/bounce/inbound.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { startSmtp, type SmtpService } from "../../src/smtp/server.ts";
import { addTestUser, messagesFrom, RawSmtp, recipientsOf, startOutpost, type Outpost } from "./fixture.ts";

const CRLF = Buffer.from("\r\n");
const DIALOGS = join(import.meta.dir, "..", "dialogs");

const CONFIG = `
[smtp]
max_message_size = "4KB"
max_recipients = 3
max_connections_per_ip = 5
auth_failures_before_block = 5
auth_block_time = "10m"
trusted_networks = ["127.0.0.9", "127.0.0.30"]

[tracking]
bounce_domain = "bounces.outpost.test"
bounce_max_size = "2KB"
`;

let outpost: Outpost;
let smtp: SmtpService;
let port: number;
/** this test's own listener counts here (the outpost's registry already holds its own listener's metrics) */
const metrics = new Metrics();

beforeAll(async () => {
  outpost = await startOutpost(CONFIG);
  await addTestUser(outpost, "alice", "alice-secret-1");
  await addTestUser(outpost, "shop", "shop-secret-1", ["shop.example"]);
  smtp = await startSmtp({
    config: outpost.rt.config,
    intake: outpost.rt.intake,
    bounces: outpost.rt.bounces,
    credentials: new CredentialChecker(outpost.rt.store.db),
    log: outpost.rt.log,
    isLoopback: (ip) => ip === "127.0.0.1",
    closeTimeoutMs: 500,
    metrics,
  });
  port = smtp.addresses()[0]!.port;
});

afterAll(async () => {
  await smtp?.stop();
  await outpost?.stop();
});

/** Dialog text to bytes: UTF-8, except `\xHH`, which is that one byte (so any byte can be sent). */
function unescape(s: string): Buffer {
  const parts: Buffer[] = [];
  let last = 0;
  for (const m of s.matchAll(/\\(x[0-9a-fA-F]{2}|[rn0t\\])/g)) {
    parts.push(Buffer.from(s.slice(last, m.index), "utf8"));
    const e = m[1]!;
    const byte = e.startsWith("x") ? parseInt(e.slice(1), 16) : { r: 13, n: 10, "0": 0, t: 9, "\\": 92 }[e]!;
    parts.push(Buffer.from([byte]));
    last = m.index + m[0].length;
  }
  parts.push(Buffer.from(s.slice(last), "utf8"));
  return Buffer.concat(parts);
}

async function runDialog(text: string, transcript: string[]): Promise<void> {
  const lines = text.split("\n");
  const client = lines[0]?.match(/^@client (\S+)/)?.[1] ?? "127.0.0.1";
  let conn = await RawSmtp.connect(port, { localAddress: client });
  let last = "";
  try {
    for (const [i, raw] of lines.entries()) {
      const line = raw.replace(/\r$/, "");
      if (line.trim() === "" || line.startsWith("#") || line.startsWith("@client")) continue;
      const where = `line ${i + 1}: ${line}`;
      const [, op = "", rest = ""] = line.match(/^(>repeat|>>|>|<|!~|~|@\w+|=)\s?(.*)$/) ?? [];
      transcript.push(line);
      if (op === ">") conn.write(Buffer.concat([unescape(rest), CRLF]));
      else if (op === ">>") conn.write(unescape(rest));
      else if (op === ">repeat") {
        const [, n = "0", t = ""] = rest.match(/^(\d+) (.*)$/) ?? [];
        conn.write(Buffer.concat(Array(Number(n)).fill(Buffer.concat([unescape(t), CRLF]))));
      } else if (op === "<") {
        last = await conn.reply();
        transcript.push(`  got: ${JSON.stringify(last)}`);
        expect(last, where).toMatch(new RegExp(rest, "m"));
      } else if (op === "~") expect(last, where).toMatch(new RegExp(rest, "m"));
      else if (op === "!~") expect(last, where).not.toMatch(new RegExp(rest, "m"));
      else if (op === "@starttls") await conn.starttls();
      else if (op === "@pause") await Bun.sleep(Number(rest));
      else if (op === "@reconnect") {
        conn.close();
        conn = await RawSmtp.connect(port, { localAddress: client });
      } else if (op === "=") check(rest, where);
      else throw new Error(`unknown step at ${where}`);
      if (op === "=" && rest === "closed") expect(await conn.waitClosed(), where).toBe(true);
    }
    await Bun.sleep(50); // let a reply that should not exist arrive
    expect(conn.unread(), "replies nobody asked for (a smuggled command ran?)").toBe("");
  } finally {
    conn.close();
  }
}

function check(rest: string, where: string): void {
  const [, kind = "", sender = "", arg = ""] = rest.match(/^(\S+)(?: (\S+))?(?: (.*))?$/) ?? [];
  if (kind === "closed") return;
  if (kind === "inbound") {
    const kept = new InboundStore(outpost.rt.store.sqlite).list().filter((m) => m.kind === sender);
    return void expect(kept.length, where).toBe(Number(arg));
  }
  const rows = messagesFrom(outpost, sender === "<>" ? "" : sender);
  if (kind === "queued") expect(rows.length, where).toBe(Number(arg));
  else if (kind === "recipients") {
    expect(rows.length, where).toBe(1);
    expect(recipientsOf(outpost, rows[0]!.id).length, where).toBe(Number(arg));
  } else if (kind === "rcpts") {
    expect(rows.length, where).toBe(1);
    expect(recipientsOf(outpost, rows[0]!.id).join(","), where).toBe(arg);
  } else if (kind === "body" || kind === "nobody") {
    expect(rows.length, where).toBe(1);
    const body = Buffer.from(rows[0]!.body).toString("latin1");
    const re = new RegExp(unescape(arg).toString("latin1"));
    if (kind === "body") expect(body, where).toMatch(re);
    else expect(body, where).not.toMatch(re);
  } else throw new Error(`unknown check at ${where}`);
}

describe("SMTP dialogs", () => {
  const files = readdirSync(DIALOGS).filter((f) => f.endsWith(".smtp")).sort();
  test("there are dialog files to run", () => expect(files.length).toBeGreaterThan(10));
  for (const file of files) {
    const text = readFileSync(join(DIALOGS, file), "utf8");
    const title = text.match(/^# (.*)$/m)?.[1] ?? file;
    test(`${file}: ${title}`, async () => {
      const transcript: string[] = [];
      const logsBefore = outpost.logs.length;
      try {
        await runDialog(text, transcript);
      } catch (e) {
        console.error(`--- ${file} transcript ---\n${transcript.join("\n")}\n--- log tail ---`);
        for (const l of outpost.logs.slice(logsBefore).slice(-15)) console.error(JSON.stringify(l));
        throw e;
      }
    });
  }
});

test("a failed AUTH is logged in a line the fail2ban filter in docs/smtp.md matches, naming the client", async () => {
  const docs = readFileSync(join(import.meta.dir, "..", "..", "docs", "smtp.md"), "utf8");
  const failregex = docs.match(/^\s*failregex = (.*)$/m)?.[1];
  expect(failregex).toBeDefined();
  // fail2ban's <HOST> stands for the address it will ban
  const filter = new RegExp(failregex!.replace("<HOST>", "(?<host>[0-9a-fA-F.:]+)"));
  const conn = await RawSmtp.connect(port, { localAddress: "127.0.0.6" });
  const linesBefore = outpost.lines.length;
  try {
    await talk(conn, [[null, /^220/], ["EHLO f2b.test", /^250/], ["STARTTLS", /^220/]]);
    await conn.starttls();
    await talk(conn, [["EHLO f2b.test", /^250/], [`AUTH PLAIN ${Buffer.from("\0alice\0wrong").toString("base64")}`, /^535 5\.7\.8/]]);
  } finally {
    conn.close();
  }
  const hosts = outpost.lines.slice(linesBefore).flatMap((l) => l.match(filter)?.groups?.host ?? []);
  expect(hosts).toEqual(["127.0.0.6"]);
});

describe("where the client's header block ends", () => {
  async function submit(sender: string, message: string): Promise<{ reply: string; body: string; subject: string; opens: number }> {
    const conn = await RawSmtp.connect(port, { localAddress: "127.0.0.9" });
    let reply: string;
    try {
      await talk(conn, [[null, /^220/], ["EHLO app.local", /^250/], [`MAIL FROM:<${sender}>`, /^250/], ["RCPT TO:<a@example.com>", /^250/], ["DATA", /^354/]]);
      conn.write(message);
      conn.write(".\r\n");
      reply = await conn.reply();
    } finally {
      conn.close();
    }
    const row = messagesFrom(outpost, sender).at(-1)!;
    return { reply, body: Buffer.from(row.body).toString("latin1"), subject: row.subject, opens: row.track_opens };
  }
  const headBlock = (body: string) => body.slice(0, body.indexOf("\r\n\r\n") + 2);

  test("an mbox 'From ' first line becomes X-Mailbox-Line: the client's headers stay headers (Bcc removed, options read)", async () => {
    const r = await submit("mbox@trusted.example",
      "From alice@x.test Mon Jan  1 00:00:00 2026\r\nFrom: alice@x.test\r\nTo: a@example.com\r\nBcc: secret@z.test\r\n" +
      "X-Outpost-Track-Opens: yes\r\nSubject: from mbox\r\n\r\nhello\r\n");
    expect(r.reply).toMatch(/^250 2\.0\.0 /);
    const head = headBlock(r.body);
    expect(head).toMatch(/^Received: /);
    expect(head).toContain("\r\nX-Mailbox-Line: From alice@x.test Mon Jan  1 00:00:00 2026\r\n");
    expect(head).toContain("\r\nSubject: from mbox\r\n");
    expect(r.body).not.toContain("secret@z.test");
    expect(r.subject).toBe("from mbox");
    expect(r.opens).toBe(1);
  });

  test("prose that starts with 'From ' and the obsolete 'From :' field are not taken for an mbox line", async () => {
    const prose = await submit("prose@trusted.example", "From the desk of the CEO\r\nNote: the office is closed Friday.\r\nThanks\r\n");
    expect(prose.body).toMatch(/\r\n\r\nFrom the desk of the CEO\r\nNote: the office is closed Friday\.\r\nThanks\r\n$/);
    expect(prose.body).not.toContain("X-Mailbox-Line");
    const obsolete = await submit("obsolete@trusted.example", "From : alice@x.test\r\nSubject: old syntax\r\n\r\nhi\r\n");
    expect(headBlock(obsolete.body)).toContain("\r\nFrom : alice@x.test\r\n");
    expect(obsolete.subject).toBe("old syntax");
  });

  test("a first line that starts with a space is body, not a continuation of our Received line", async () => {
    const r = await submit("indented@trusted.example", " indented first line\r\nmore\r\n");
    expect(r.reply).toMatch(/^250 2\.0\.0 /);
    expect(r.body).toMatch(/\r\n\r\n indented first line\r\nmore\r\n$/);
    expect(headBlock(r.body)).not.toContain("indented");
  });

  test("a header name with 8-bit bytes does not end the block: a Bcc after it is still removed", async () => {
    const r = await submit("eightbit@trusted.example", "To: a@example.com\r\nX-Caf\xc3\xa9: 1\r\nBcc: secret@z.test\r\nSubject: hi\r\n\r\nbody\r\n");
    expect(r.reply).toMatch(/^250 2\.0\.0 /);
    expect(r.body).not.toContain("secret@z.test");
    expect(r.subject).toBe("hi");
  });
});

test("a message of exactly max_message_size bytes is queued (our Received line is not counted); one byte more is 552", async () => {
  // 4 KB limit: the header, then 70-byte lines, then one line that makes up the rest
  const exactly = (n: number) => {
    const head = "Subject: at the limit\r\n\r\n";
    const lines = `${"y".repeat(68)}\r\n`.repeat(Math.floor((n - head.length) / 70) - 1);
    const last = n - head.length - lines.length;
    return head + lines + `${"z".repeat(last - 2)}\r\n`;
  };
  expect(Buffer.byteLength(exactly(4096))).toBe(4096);
  const counted = async () => /result="accepted"\} (\d+)\n.*result="refused"\} (\d+)/s.exec(await metrics.render())!.slice(1).map(Number);
  const [accepted, refused] = await counted();
  for (const [size, reply] of [[4096, /^250 2\.0\.0 /], [4097, /^552 5\.3\.4 /]] as const) {
    const conn = await RawSmtp.connect(port, { localAddress: "127.0.0.9" });
    try {
      await talk(conn, [[null, /^220/], ["EHLO app.local", /^250/], ["MAIL FROM:<edge@trusted.example>", /^250/], ["RCPT TO:<a@example.com>", /^250/], ["DATA", /^354/]]);
      conn.write(exactly(size));
      await talk(conn, [[".", reply]]);
    } finally {
      conn.close();
    }
  }
  // /metrics: one more accepted, one more refused
  expect(await counted()).toEqual([accepted! + 1, refused! + 1]);
});

test("a recipient repeated in U-label and A-label form is logged once, as it is stored once", async () => {
  const conn = await RawSmtp.connect(port, { localAddress: "127.0.0.9" });
  const logsBefore = outpost.logs.length;
  try {
    await talk(conn, [[null, /^220/], ["EHLO app.local", /^250/], ["MAIL FROM:<idn-log@trusted.example> SMTPUTF8", /^250/],
      // RawSmtp writes latin1: the UTF-8 bytes of the U-label form, as a client sends them
      [`RCPT TO:<${Buffer.from("jörg@bücher.example").toString("latin1")}>`, /^250/],
      [`RCPT TO:<${Buffer.from("jörg@xn--bcher-kva.example").toString("latin1")}>`, /^250/], ["DATA", /^354/]]);
    conn.write("Subject: idn\r\n\r\nhi\r\n");
    await talk(conn, [[".", /^250 2\.0\.0 /]]);
  } finally {
    conn.close();
  }
  const line = outpost.logs.slice(logsBefore).find((l) => l.event === "smtp_message");
  expect(line?.recipients).toEqual(["jörg@xn--bcher-kva.example"]);
  expect(recipientsOf(outpost, messagesFrom(outpost, "idn-log@trusted.example")[0]!.id)).toEqual(["jörg@xn--bcher-kva.example"]);
});

test("a refused message gets its transaction log line too: no queue id, the reply, and the size actually received", async () => {
  const conn = await RawSmtp.connect(port, { localAddress: "127.0.0.9" });
  const logsBefore = outpost.logs.length;
  const body = "x".repeat(70);
  try {
    await talk(conn, [[null, /^220/], ["EHLO app.local", /^250/], ["MAIL FROM:<logged-big@trusted.example>", /^250/], ["RCPT TO:<a@example.com>", /^250/], ["DATA", /^354/]]);
    conn.write(`Subject: big\r\n\r\n${`${body}\r\n`.repeat(100)}`);
    await talk(conn, [[".", /^552 5\.3\.4 /]]);
  } finally {
    conn.close();
  }
  const lines = outpost.logs.slice(logsBefore).filter((l) => l.event === "smtp_message");
  expect(lines).toEqual([expect.objectContaining({
    queue_id: null, client_ip: "127.0.0.9", user: null, sender: "logged-big@trusted.example", recipients: ["a@example.com"], tls: false,
    size: "Subject: big\r\n\r\n".length + 72 * 100, result: expect.stringMatching(/^552 5\.3\.4 message exceeds/),
  })]);
});

/** Sends each command (null: none, just read the greeting) and expects its reply to match. */
async function talk(conn: RawSmtp, steps: Array<readonly [string | null, RegExp]>): Promise<void> {
  for (const [send, want] of steps) {
    if (send !== null) conn.write(`${send}\r\n`);
    expect(await conn.reply(), send ?? "greeting").toMatch(want);
  }
}
