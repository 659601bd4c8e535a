import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, isIP, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newMessageId, newRecipientId } from "../mail/ids.ts";
import { LineEndWriter } from "../message/line-ends.ts";
import { silentLogger } from "../observe/log.ts";
import { startFakeMx, type FakeMx, type FakeMxScript } from "../../test/helpers/fake-mx.ts";
import { startDnsServer } from "../../test/helpers/dns-server.ts";
import { freePort, tempDir } from "../../test/helpers/harness.ts";
import { makeTestCa, testCaAvailable, type TestCa } from "../../test/helpers/test-ca.ts";
import { createResolver, lookupVia } from "./resolver.ts";
import { MxRouter } from "./route.ts";
import { SmtpTransport, type SmtpTransportOptions } from "./transport.ts";
import { ownAddresses } from "./own-addresses.ts";
import { selfSignedCertificate } from "../smtp/self-signed.ts";
import { ConnectFailure, LoopsBackToMyself, type Destination, type OutboundMessage } from "./types.ts";

const servers: FakeMx[] = [];
const silentServers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  for (const s of silentServers.splice(0)) s.close();
});

async function mx(host: string, script: FakeMxScript & { port?: number } = {}): Promise<FakeMx> {
  const s = await startFakeMx({ host, ...script });
  servers.push(s);
  return s;
}

/** MX host names used in tests map to loopback addresses. */
const HOSTS: Record<string, string[]> = {
  "mx1.x.test": ["127.0.0.2"],
  "mx2.x.test": ["127.0.0.3"],
  "mx3.x.test": ["127.0.0.4"],
  "smarthost.test": ["127.0.0.5"],
};

function transport(port: number, opts: Partial<SmtpTransportOptions> = {}): SmtpTransport {
  return new SmtpTransport({
    hostname: "outpost.test",
    tls: "opportunistic",
    log: silentLogger,
    timeouts: { connectMs: 2000, greetingMs: 2000, socketMs: 3000, quitMs: 500 },
    lookup: async (h) => HOSTS[h] ?? (isIP(h) ? [h] : Promise.reject(new Error(`unknown host ${h}`))),
    connectPort: port,
    ...opts,
  });
}

function dest(hosts: string[], extra: Partial<Destination> = {}): Destination {
  return { key: hosts.join(","), hosts: hosts.map((host, i) => ({ host, port: 25, preference: i * 10 })), tls: "opportunistic", static: false, ...extra };
}

function message(to: string[], body = "Subject: hi\r\n\r\nhello\r\n", from = "sender@outpost.test"): OutboundMessage {
  return {
    messageId: newMessageId(),
    envelopeFrom: from,
    recipients: to.map((address) => ({ id: newRecipientId(), address })),
    body: Buffer.from(body),
  };
}

/** One message over a fresh session to a fake MX on 127.0.0.2 running `script`; the session is closed after. */
async function sendOnce(script: FakeMxScript, to: string[]) {
  const s = await mx("127.0.0.2", script);
  const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
  const results = await conn.send(message(to));
  await conn.close();
  return results;
}

describe("large bodies on the wire", () => {
  /** 50 KiB and more: dotted lines, a lone dot, a body and a line opening with dots. */
  const dotted = (lineEnd: string) =>
    `Subject: big\r\n\r\n.first line opens with a dot${lineEnd}` +
    Array.from({ length: 4000 }, (_, i) => (i % 3 === 0 ? `.line ${i}${lineEnd}` : i % 7 === 0 ? `.${lineEnd}..${lineEnd}` : `line ${i} of text${lineEnd}`)).join("");

  async function deliver(body: Buffer): Promise<Buffer> {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send({ ...message(["a@x.test"]), body });
    await conn.close();
    expect(results.map((r) => r.outcome)).toEqual(["delivered"]);
    return s.messages[0]!.raw;
  }

  test("a body in CRLF with dots at line starts arrives byte for byte", async () => {
    const body = Buffer.from(dotted("\r\n"));
    expect(body.length).toBeGreaterThan(50 * 1024);
    expect((await deliver(body)).equals(body)).toBe(true);
  });

  test("a body intake made CRLF is sent without being searched for bare line ends again, byte for byte", async () => {
    const w = new LineEndWriter(64 * 1024);
    w.write(Buffer.from(dotted("\n")));
    const body = w.finish();
    const indexOf = Buffer.prototype.indexOf;
    let lineEndSearches = 0;
    Buffer.prototype.indexOf = function (this: Buffer, ...args: Parameters<Buffer["indexOf"]>) {
      if (this === body && typeof args[0] === "number") lineEndSearches++;
      return indexOf.apply(this, args);
    };
    try {
      expect((await deliver(body)).equals(body)).toBe(true);
    } finally {
      Buffer.prototype.indexOf = indexOf;
    }
    expect(lineEndSearches).toBe(0);
  });

  test("a body with bare LFs and bare CRs among dotted lines arrives with CRLF line ends, every other byte as it was", async () => {
    const body = Buffer.from(dotted("\n") + "a bare CR\r.dot after it\r\n" + dotted("\r").slice(20) + "end\r\n", "latin1");
    const want = Buffer.from(body.toString("latin1").replace(/\r\n|\r|\n/g, "\r\n"), "latin1");
    expect((await deliver(body)).equals(want)).toBe(true);
  });
});

describe("SmtpTransport", () => {
  test("delivers one message to all recipients in one transaction and reports each one", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const msg = message(["a@x.test", "b@x.test"]);
    const results = await conn.send(msg);
    await conn.close();
    expect(results.map((r) => [r.recipientId, r.outcome, r.code, r.mx])).toEqual(
      msg.recipients.map((r) => [r.id, "delivered", 250, "mx1.x.test"]),
    );
    expect(s.messages).toHaveLength(1);
    expect(s.messages[0]!.to).toEqual(["a@x.test", "b@x.test"]);
    expect(s.messages[0]!.from).toBe("sender@outpost.test");
    expect(s.messages[0]!.helo).toBe("outpost.test");
  });

  test("reports each recipient's own RCPT reply: 250 delivered, 450 deferred, 550 bounced", async () => {
    const s = await mx("127.0.0.2", {
      rcpt: { "later@x.test": "450 4.2.0 mailbox busy", "bad@x.test": "550 5.1.1 no such user" },
    });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const msg = message(["good@x.test", "later@x.test", "bad@x.test"]);
    const results = await conn.send(msg);
    await conn.close();
    expect(results.map((r) => [r.outcome, r.code, r.enhanced])).toEqual([
      ["delivered", 250, "2.0.0"],
      ["deferred", 450, "4.2.0"],
      ["bounced", 550, "5.1.1"],
    ]);
    expect(results[2]!.reply).toBe("550 5.1.1 no such user");
    expect(results.map((r) => r.recipientId)).toEqual(msg.recipients.map((r) => r.id));
    expect(s.messages[0]!.to).toEqual(["good@x.test"]);
  });

  test("applies the DATA reply to every accepted recipient and keeps RCPT refusals", async () => {
    const s = await mx("127.0.0.2", { rcpt: { "bad@x.test": "550 5.1.1 no such user" }, data: "451 4.3.0 try later" });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["a@x.test", "bad@x.test", "b@x.test"]));
    expect(results.map((r) => [r.outcome, r.code, r.enhanced, r.reply])).toEqual([
      ["deferred", 451, "4.3.0", "451 4.3.0 try later"],
      ["bounced", 550, "5.1.1", "550 5.1.1 no such user"],
      ["deferred", 451, "4.3.0", "451 4.3.0 try later"],
    ]);
    expect(conn.usable).toBe(true);
    await conn.close();
    expect(s.messages).toHaveLength(0);
    // only the RCPT refusal is about that recipient's own address (what may suppress it); the DATA reply is shared
    expect(results.map((r) => r.aboutRecipient === true)).toEqual([false, true, false]);
  });

  test("a refused MAIL FROM (a bad sender) is no recipient's own reply, even with a 5.1.x code", async () => {
    const results = await sendOnce({ mail: "550 5.1.8 Sender address rejected: Domain not found" }, ["a@x.test", "b@x.test"]);
    expect(results.map((r) => [r.outcome, r.enhanced, r.aboutRecipient === true])).toEqual([
      ["bounced", "5.1.8", false],
      ["bounced", "5.1.8", false],
    ]);
  });

  test.each([
    ["a recipient address with stray spaces still gets its own RCPT reply", {}, [" bad@x.test ", "good@x.test"]],
    ["a server without PIPELINING gets the same per-recipient results", { pipelining: false }, ["bad@x.test", "good@x.test"]],
  ] as [string, FakeMxScript, string[]][])("%s", async (_name, script, to) => {
    const results = await sendOnce({ ...script, rcpt: { "bad@x.test": "550 5.1.1 no such user" } }, to);
    expect(results.map((r) => r.outcome)).toEqual(["bounced", "delivered"]);
  });

  test("a 5xx DATA reply bounces the accepted recipients", async () => {
    const results = await sendOnce({ data: "554 5.7.1 spam" }, ["a@x.test"]);
    expect(results[0]).toMatchObject({ outcome: "bounced", code: 554, enhanced: "5.7.1" });
  });

  test("a refused MAIL FROM gives its reply to every recipient", async () => {
    const results = await sendOnce({ mail: "452 4.3.1 insufficient storage" }, ["a@x.test", "b@x.test"]);
    expect(results.map((r) => [r.outcome, r.code, r.enhanced])).toEqual([
      ["deferred", 452, "4.3.1"],
      ["deferred", 452, "4.3.1"],
    ]);
  });

  test("a 421 greeting is a ConnectFailure with the throttle signal and code 421", async () => {
    const s = await mx("127.0.0.2", { greeting421: "4.7.0 too many connections from your IP" });
    const err = await transport(s.port).connect(dest(["mx1.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    const cf = err as ConnectFailure;
    expect(cf.throttleSignal).toBe(true);
    expect(cf.code).toBe(421);
    expect(cf.mx).toBe("mx1.x.test");
    expect(cf.message).toContain("too many connections");
  });

  test("a refused connection is a ConnectFailure with the throttle signal", async () => {
    const s = await mx("127.0.0.2");
    // nothing listens on 127.0.0.3 at that port
    const err = await transport(s.port).connect(dest(["mx2.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).throttleSignal).toBe(true);
    expect((err as ConnectFailure).message).toContain("connection refused");
  });

  test("when the first MX refuses, the second MX gets the message", async () => {
    const s = await mx("127.0.0.3");
    const conn = await transport(s.port).connect(dest(["mx1.x.test", "mx2.x.test"]));
    expect(conn.mx).toBe("mx2.x.test");
    const results = await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(results[0]).toMatchObject({ outcome: "delivered", mx: "mx2.x.test" });
    expect(s.messages).toHaveLength(1);
  });

  test("two MX names at one address are tried once: a dead server is not connected to twice", async () => {
    const s = await mx("127.0.0.2");
    const sameIp = { lookup: async () => ["127.0.0.3"] }; // both names, nothing listening there
    const err = await transport(s.port, sameIp).connect(dest(["mx1.x.test", "mx2.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).message.match(/127\.0\.0\.3/g)).toHaveLength(1);
  });

  test("an MX host whose address cannot be found is skipped", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["nowhere.x.test", "mx1.x.test"]));
    expect(conn.mx).toBe("mx1.x.test");
    await conn.close();
  });

  test("tries at most 5 addresses in all, IPv4 first, each of a host's addresses once", async () => {
    const none = ["127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15", "127.0.0.16", "127.0.0.17"];
    const lookup = async (h: string) => (h === "a.x.test" ? ["::1", "127.0.0.11", "127.0.0.11"] : none);
    // nothing listens there on this (just freed) port: every address refuses
    const s = await mx("127.0.0.2");
    await s.stop();
    const err = (await transport(s.port, { lookup }).connect(dest(["a.x.test", "b.x.test"])).catch((e: unknown) => e)) as ConnectFailure;
    expect(err).toBeInstanceOf(ConnectFailure);
    const tried = [...err.message.matchAll(/\[([^\]]+)\]/g)].map((m) => m[1]);
    expect(tried).toEqual(["127.0.0.11", "::1", "127.0.0.12", "127.0.0.13", "127.0.0.14"]);
  });

  test("a message over the server's SIZE limit bounces 5.3.4 without being sent; the session stays usable", async () => {
    const s = await mx("127.0.0.2", { size: 100 });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [big] = await conn.send(message(["a@x.test"], `Subject: big\r\n\r\n${"x".repeat(200)}\r\n`));
    expect(big).toMatchObject({ outcome: "bounced", code: 0, enhanced: "5.3.4" });
    expect(conn.usable).toBe(true);
    const [small] = await conn.send(message(["b@x.test"]));
    await conn.close();
    expect(small!.outcome).toBe("delivered");
    expect(s.messages.map((m) => m.to)).toEqual([["b@x.test"]]);
  });

  test("after a 421 greeting the next MX is tried", async () => {
    const busy = await mx("127.0.0.2", { greeting421: true });
    const s = await mx("127.0.0.3", { port: busy.port });
    const conn = await transport(busy.port).connect(dest(["mx1.x.test", "mx2.x.test"]));
    expect(conn.mx).toBe("mx2.x.test");
    await conn.close();
    expect(busy.connections).toBe(1);
    expect(s.connections).toBe(1);
  });

  test("a server that never greets times out without the throttle signal", async () => {
    const silent = createServer(() => {});
    silentServers.push(silent);
    await new Promise<void>((r) => silent.listen(0, "127.0.0.4", () => r()));
    const port = (silent.address() as { port: number }).port;
    const t = transport(port, { timeouts: { connectMs: 1000, greetingMs: 300, socketMs: 1000, quitMs: 100 } });
    const err = await t.connect(dest(["mx3.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).throttleSignal).toBe(false);
    expect((err as ConnectFailure).message).toMatch(/greeting/i);
  });

  test("uses STARTTLS when offered, accepting a self-signed certificate", async () => {
    const s = await mx("127.0.0.2", { starttls: true });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(results[0]!.outcome).toBe("delivered");
    expect(s.messages[0]!.secure).toBe(true);
  });

  test("sends in clear when STARTTLS is not offered and TLS is opportunistic", async () => {
    const s = await mx("127.0.0.2", { starttls: false });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(s.messages[0]!.secure).toBe(false);
  });

  test("retries once in clear when the TLS session breaks and TLS is opportunistic", async () => {
    const s = await mx("127.0.0.2", { starttls: true, tlsFails: true });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(results[0]!.outcome).toBe("delivered");
    expect(s.connections).toBe(2);
    expect(s.messages[0]!.secure).toBe(false);
  });

  test("tls = required and STARTTLS not offered: ConnectFailure saying so, nothing sent in clear", async () => {
    const s = await mx("127.0.0.2", { starttls: false });
    const err = await transport(s.port).connect(dest(["mx1.x.test"], { tls: "required" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).throttleSignal).toBe(false);
    expect((err as ConnectFailure).message).toContain("TLS required but STARTTLS was refused");
    expect(s.rcptSeen).toEqual([]);
  });

  test("tls = required on the transport applies to a destination that asks for less", async () => {
    const s = await mx("127.0.0.2", { starttls: false });
    const err = await transport(s.port, { tls: "required" }).connect(dest(["mx1.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
  });

  test("tls = required and a broken TLS session: ConnectFailure, no fallback to clear", async () => {
    const s = await mx("127.0.0.2", { starttls: true, tlsFails: true });
    const err = await transport(s.port).connect(dest(["mx1.x.test"], { tls: "required" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).message).toContain("TLS required but the TLS session failed");
    expect(s.connections).toBe(1);
    expect(s.messages).toHaveLength(0);
  });

  test("tls = required and STARTTLS offered: delivered over TLS", async () => {
    const s = await mx("127.0.0.2", { starttls: true });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"], { tls: "required" }));
    await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(s.messages[0]!.secure).toBe(true);
  });

  test("reuses one connection for several messages, also after a refused one", async () => {
    const s = await mx("127.0.0.2", { rcpt: { "bad@x.test": "550 5.1.1 no such user" } });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const outcomes: string[] = [];
    for (const to of ["a@x.test", "bad@x.test", "b@x.test", "c@x.test"]) {
      const [r] = await conn.send(message([to], `Subject: ${to}\r\n\r\nbody\r\n`));
      outcomes.push(r!.outcome);
      expect(conn.usable).toBe(true);
    }
    expect(conn.sent).toBe(4);
    await conn.close();
    expect(outcomes).toEqual(["delivered", "bounced", "delivered", "delivered"]);
    expect(s.connections).toBe(1);
    expect(s.messages.map((m) => m.to[0])).toEqual(["a@x.test", "b@x.test", "c@x.test"]);
    expect(new Set(s.messages.map((m) => m.sessionId)).size).toBe(1);
    expect(conn.usable).toBe(false);
  });

  test("dot-stuffing: lines starting with a dot and an embedded CRLF.CRLF arrive intact as one message", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const body = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nbefore\r\n.\r\nafter the lone dot\r\n.\r\n";
    const results = await conn.send(message(["a@x.test"], body));
    const [second] = await conn.send(message(["b@x.test"], "Subject: next\r\n\r\nnext\r\n"));
    await conn.close();
    expect(results[0]!.outcome).toBe("delivered");
    expect(second!.outcome).toBe("delivered");
    expect(s.transactions).toHaveLength(2);
    expect(s.messages[0]!.raw.toString()).toBe(body);
    expect(s.messages[1]!.raw.toString()).toBe("Subject: next\r\n\r\nnext\r\n");
  });

  test("bare LF and bare CR in a body go out as CRLF, and a smuggled end-of-data stays inside one message", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const body = "Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<evil@x.test>\r.\rend\r\n";
    const [r] = await conn.send(message(["a@x.test"], body));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
    expect(s.transactions).toHaveLength(1);
    const raw = s.messages[0]!.raw.toString("latin1");
    expect(raw).toBe("Subject: smuggle\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\nend\r\n");
    expect(raw.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/);
  });

  test("close() during a transaction cuts it: the send resolves deferred, nothing throws", async () => {
    const s = await mx("127.0.0.2", { delayMs: 300 });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const sending = conn.send(message(["a@x.test"]));
    await Bun.sleep(50);
    await conn.close();
    const [r] = await sending;
    expect(r!.outcome).toBe("deferred");
    expect(conn.usable).toBe(false);
  });

  test("connects over IPv6 when the host's address is IPv6", async () => {
    const s = await startFakeMx({ host: "::1" }).catch(() => null);
    if (!s) return; // no IPv6 loopback here
    servers.push(s);
    const conn = await transport(s.port, { lookup: async () => ["::1"] }).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
  });

  test("a connection lost mid-DATA defers the message and the session is not reused", async () => {
    const s = await mx("127.0.0.2", { data: "drop" });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["a@x.test", "b@x.test"]));
    expect(results.map((r) => [r.outcome, r.code])).toEqual([
      ["deferred", 0],
      ["deferred", 0],
    ]);
    expect(results[0]!.enhanced).toBe("4.4.2");
    expect(conn.usable).toBe(false);
    const again = await conn.send(message(["c@x.test"]));
    expect(again[0]!.outcome).toBe("deferred");
    await conn.close();
  });

  test("a connection cut after RCPT keeps the RCPT refusals and defers the rest", async () => {
    const s = await mx("127.0.0.2", { pipelining: false, rcpt: { "bad@x.test": "550 5.1.1 no such user", "cut@x.test": "drop" } });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["bad@x.test", "cut@x.test", "ok@x.test"]));
    expect(results.map((r) => [r.outcome, r.code])).toEqual([
      ["bounced", 550],
      ["deferred", 0],
      ["deferred", 0],
    ]);
    expect(conn.usable).toBe(false);
    await conn.close();
  });

  test("a greeting slower than the greeting timeout is a ConnectFailure", async () => {
    const s = await mx("127.0.0.2", { greetingDelayMs: 600 });
    const t = transport(s.port, { timeouts: { connectMs: 2000, greetingMs: 200, socketMs: 2000, quitMs: 100 } });
    const err = await t.connect(dest(["mx1.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).throttleSignal).toBe(false);
  });

  test("a 421 in the middle of a transaction defers with code 421 and ends the session", async () => {
    const s = await mx("127.0.0.2", { data: "421 4.7.0 closing, too many messages" });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["a@x.test"]));
    expect(r).toMatchObject({ outcome: "deferred", code: 421, enhanced: "4.7.0" });
    expect(conn.usable).toBe(false);
    await conn.close();
  });

  test("declares BODY=8BITMIME for 8-bit bodies and SMTPUTF8 for non-ASCII addresses or UTF-8 header fields", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    await conn.send(message(["a@x.test"], "Subject: plain\r\n\r\nascii\r\n"));
    await conn.send(message(["a@x.test"], "Subject: plain\r\n\r\nd\u00e9j\u00e0 vu\r\n"));
    await conn.send(message(["a@x.test"], "Subject: caf\u00e9\r\n\r\nascii\r\n"));
    await conn.send(message(["j\u00f6rg@x.test"]));
    await conn.close();
    expect(s.messages.map((m) => [m.bodyType, m.smtpUtf8])).toEqual([
      ["7bit", false],
      ["8bitmime", false],
      ["8bitmime", true],
      ["7bit", true],
    ]);
    expect(s.messages[1]!.raw.toString("utf8")).toContain("d\u00e9j\u00e0 vu");
    expect(s.messages[2]!.raw.toString("utf8")).toContain("Subject: caf\u00e9\r\n");
  });

  test("UTF-8 header fields ask for SMTPUTF8 without PIPELINING too, and only for that transaction", async () => {
    const s = await mx("127.0.0.2", { pipelining: false });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["a@x.test", "b@x.test"], "From: J\u00f6rg <sender@outpost.test>\r\nSubject: x\r\n\r\nhi\r\n"));
    await conn.send(message(["a@x.test"], "Subject: plain\r\n\r\nascii\r\n"));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
    expect(s.messages.map((m) => [m.to, m.smtpUtf8])).toEqual([
      [["a@x.test", "b@x.test"], true],
      [["a@x.test"], false],
    ]);
  });

  test("UTF-8 header fields to a server without SMTPUTF8 go as they are (Postfix's default), not bounced", async () => {
    const s = await mx("127.0.0.2", { smtputf8: false });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["a@x.test"], "Subject: caf\u00e9\r\n\r\nascii\r\n"));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
    expect(s.messages.map((m) => [m.bodyType, m.smtpUtf8])).toEqual([["8bitmime", false]]);
    expect(s.messages[0]!.raw.toString("utf8")).toContain("Subject: caf\u00e9\r\n");
  });

  test("a non-ASCII address to a server without SMTPUTF8 bounces with 5.6.7 and sends nothing", async () => {
    const s = await mx("127.0.0.2", { smtputf8: false });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["j\u00f6rg@x.test"]));
    expect(r).toMatchObject({ outcome: "bounced", code: 0, enhanced: "5.6.7" });
    expect(conn.usable).toBe(true);
    await conn.close();
    expect(s.rcptSeen).toEqual([]);
  });

  test("only the non-ASCII recipient bounces when the server lacks SMTPUTF8; the others go", async () => {
    const s = await mx("127.0.0.2", { smtputf8: false });
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["a@x.test", "j\u00f6rg@x.test", "b@x.test"]));
    await conn.close();
    expect(results.map((r) => [r.outcome, r.enhanced])).toEqual([
      ["delivered", "2.0.0"],
      ["bounced", "5.6.7"],
      ["delivered", "2.0.0"],
    ]);
    expect(s.messages[0]!.to).toEqual(["a@x.test", "b@x.test"]);
  });

  test("a recipient address with CR, LF or angle brackets bounces with 5.1.3; the others go", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const results = await conn.send(message(["a@x.test", "evil@x.test>\r\nRCPT TO:<b@x.test"]));
    await conn.close();
    expect(results.map((r) => [r.outcome, r.enhanced])).toEqual([
      ["delivered", "2.0.0"],
      ["bounced", "5.1.3"],
    ]);
    expect(s.rcptSeen).toEqual(["a@x.test"]);
  });

  test("a body with a NUL byte is refused locally, never sent", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["a@x.test"], "Subject: x\r\n\r\na\u0000b\r\n"));
    await conn.close();
    expect(r).toMatchObject({ outcome: "bounced", enhanced: "5.6.0" });
    expect(s.transactions).toHaveLength(0);
  });

  test("the null sender goes out as MAIL FROM:<>", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const [r] = await conn.send(message(["a@x.test"], undefined, ""));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
    expect(s.messages[0]!.from).toBe("");
  });

  test("a static route uses its own port and logs in with its credentials over TLS", async () => {
    const s = await mx("127.0.0.2", { starttls: true, auth: { user: "relay", pass: "secret" } });
    const t = transport(1); // connectPort applies to MX hosts only
    const d = dest(["mx1.x.test"], { static: true, key: "route:mx1.x.test", auth: { user: "relay", pass: "secret" } });
    d.hosts[0]!.port = s.port;
    const conn = await t.connect(d);
    const [r] = await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
    expect(s.logins).toEqual(["relay"]);
  });

  test("wrong credentials for a static route are a ConnectFailure", async () => {
    const s = await mx("127.0.0.2", { starttls: true, auth: { user: "relay", pass: "secret" } });
    const d = dest(["mx1.x.test"], { static: true, auth: { user: "relay", pass: "wrong" } });
    d.hosts[0]!.port = s.port;
    const err = await transport(1).connect(d).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).message).toContain("535");
    d.tls = "required";
    const strict = await transport(1).connect(d).catch((e: unknown) => e);
    expect((strict as ConnectFailure).message).toContain("535 5.7.8 authentication failed");
    expect((strict as ConnectFailure).message).not.toContain("TLS required");
    expect(s.connections).toBe(2); // a refused login is not a TLS failure: no second try in clear
  });

  test("a session the server closed while idle stops being usable", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    await conn.send(message(["a@x.test"]));
    expect(conn.usable).toBe(true);
    await s.stop();
    servers.splice(servers.indexOf(s), 1);
    await waitUntil(() => !conn.usable);
    const [r] = await conn.send(message(["b@x.test"]));
    expect(r).toMatchObject({ outcome: "deferred", code: 0 });
    await conn.close();
  });

  test("fake MX helper: counts concurrent sessions and answers 421 beyond maxConnections", async () => {
    const s = await mx("127.0.0.2", { maxConnections: 2 });
    const t = transport(s.port);
    const conns = await Promise.all([t.connect(dest(["mx1.x.test"])), t.connect(dest(["mx1.x.test"]))]);
    const third = await t.connect(dest(["mx1.x.test"])).catch((e: unknown) => e);
    expect(third).toBeInstanceOf(ConnectFailure);
    expect((third as ConnectFailure).throttleSignal).toBe(true);
    expect((third as ConnectFailure).code).toBe(421);
    await Promise.all(conns.map((c) => c.close()));
    await waitUntil(() => s.open === 0);
    expect(s.maxOpen).toBeGreaterThanOrEqual(2);
    expect(s.connections).toBe(3);
  });

  test("fake MX helper: delayMs slows every reply, so sessions overlap", async () => {
    const s = await mx("127.0.0.2", { delayMs: 150 });
    const t = transport(s.port);
    await Promise.all(
      [1, 2, 3].map(async (i) => {
        const c = await t.connect(dest(["mx1.x.test"]));
        await c.send(message([`r${i}@x.test`]));
        await c.close();
      }),
    );
    expect(s.messages).toHaveLength(3);
    expect(s.maxOpen).toBe(3);
  });

  test("routes by MX through DNS and delivers to the preferred MX's address (router + resolver + transport)", async () => {
    const backup = await mx("127.0.0.3");
    const primary = await mx("127.0.0.2", { port: backup.port });
    const dns = await startDnsServer({
      "dest.test": { mx: [{ preference: 20, exchange: "backup.dest.test" }, { preference: 10, exchange: "primary.dest.test" }] },
      "primary.dest.test": { a: ["127.0.0.2"] },
      "backup.dest.test": { a: ["127.0.0.3"] },
    });
    try {
      const resolver = createResolver([{ host: "127.0.0.1", port: dns.port }], { timeoutMs: 500, tries: 1 });
      const routed = await new MxRouter({ resolver, routes: [] }).route("dest.test");
      if (routed.kind !== "ok") throw new Error(JSON.stringify(routed));
      const conn = await transport(backup.port, { lookup: lookupVia(resolver) }).connect(routed.destination);
      const [r] = await conn.send(message(["a@dest.test"]));
      await conn.close();
      expect(r).toMatchObject({ outcome: "delivered", mx: "primary.dest.test" });
      expect(primary.messages).toHaveLength(1);
      expect(backup.connections).toBe(0);
    } finally {
      await dns.stop();
    }
  });

  test("close() is safe to call twice and after the server went away", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    await s.stop();
    servers.splice(servers.indexOf(s), 1);
    await conn.close();
    await conn.close();
    expect(conn.usable).toBe(false);
  });
});

describe.skipIf(!testCaAvailable)("SmtpTransport to a route with tls = verify", () => {
  let caDir: ReturnType<typeof tempDir>;
  let ca: TestCa;
  beforeAll(() => {
    caDir = tempDir("outpost-ca-");
    ca = makeTestCa(caDir.path);
  });
  afterAll(() => caDir.cleanup());

  const AUTH = { user: "relay", pass: "secret" };
  /** The static route to "smarthost.test" (127.0.0.5) with credentials, verifying against the test CA. */
  function smarthost(port: number, extra: Partial<Destination> = {}): Destination {
    return {
      key: `route:smarthost.test:${port}`, hosts: [{ host: "smarthost.test", port, preference: 0 }], tls: "verify",
      tlsCa: ca.caFile, auth: AUTH, static: true, ...extra,
    };
  }

  test("a certificate from the trusted CA for the route's host name: logged in and delivered over TLS", async () => {
    const s = await mx("127.0.0.5", { starttls: true, certificate: ca.issue("smarthost.test"), auth: AUTH });
    const conn = await transport(1).connect(smarthost(s.port));
    const [r] = await conn.send(message(["a@x.test"]));
    await conn.close();
    expect(r!.outcome).toBe("delivered");
    expect(s.logins).toEqual(["relay"]);
    expect(s.messages[0]!.secure).toBe(true);
  });

  test("a self-signed certificate (a man in the middle): the host fails with the reason, and AUTH is never sent", async () => {
    // the right name, signed by nobody the route trusts
    const s = await mx("127.0.0.5", { starttls: true, certificate: selfSignedCertificate("smarthost.test"), auth: AUTH });
    const err = await transport(1).connect(smarthost(s.port)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).message).toContain("smarthost.test[127.0.0.5]");
    expect((err as ConnectFailure).message).toContain("TLS required but the server's certificate did not verify (unable to verify the first certificate)");
    expect(s.authSeen).toEqual([]);
    expect(s.connections).toBe(1); // no second try in clear
  });

  test("a certificate from the trusted CA for another name: the host fails, AUTH never sent", async () => {
    const s = await mx("127.0.0.5", { starttls: true, certificate: ca.issue("other.test"), auth: AUTH });
    const err = await transport(1).connect(smarthost(s.port)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect((err as ConnectFailure).message).toContain("certificate did not verify (Hostname/IP does not match certificate's altnames");
    expect(s.authSeen).toEqual([]);
  });

  test("without the route's CA, the system's CAs do not vouch for the test CA: the host fails, AUTH never sent", async () => {
    const s = await mx("127.0.0.5", { starttls: true, certificate: ca.issue("smarthost.test"), auth: AUTH });
    const err = await transport(1).connect(smarthost(s.port, { tlsCa: undefined })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect(s.authSeen).toEqual([]);
  });

  test("a server that does not offer STARTTLS: the host fails, nothing said in clear", async () => {
    const s = await mx("127.0.0.5", { starttls: false, auth: AUTH });
    const err = await transport(1).connect(smarthost(s.port)).catch((e: unknown) => e);
    expect((err as ConnectFailure).message).toContain("TLS required");
    expect(s.authSeen).toEqual([]);
  });

  test("a route host given as an IP address is checked against the certificate's IP addresses", async () => {
    const s = await mx("127.0.0.5", { starttls: true, certificate: ca.issue("smarthost.test", ["127.0.0.5"]), auth: AUTH });
    const conn = await transport(1).connect(smarthost(s.port, { hosts: [{ host: "127.0.0.5", port: s.port, preference: 0 }] }));
    await conn.close();
    expect(s.logins).toEqual(["relay"]);
    const other = await mx("127.0.0.6", { starttls: true, certificate: ca.issue("smarthost.test", ["127.0.0.5"]), auth: AUTH });
    const err = await transport(1).connect(smarthost(other.port, { hosts: [{ host: "127.0.0.6", port: other.port, preference: 0 }] })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect(other.authSeen).toEqual([]);
  });
});

describe("SmtpTransport never dials our own listeners for an MX host", () => {
  /** "ourselves": a receiver on 127.0.0.2, named as one of our listeners, that must never see a connection */
  async function self() {
    const me = await mx("127.0.0.2");
    return { me, isOwnAddress: ownAddresses([{ ip: "127.0.0.2", port: me.port }]) };
  }

  test("an MX whose every address is one of ours is not dialled: LoopsBackToMyself, permanent, 5.4.6", async () => {
    const { me, isOwnAddress } = await self();
    const err = await transport(me.port, { isOwnAddress }).connect(dest(["mx1.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoopsBackToMyself);
    const loop = err as LoopsBackToMyself;
    expect([loop.status, loop.mx, loop.throttleSignal]).toEqual(["5.4.6", "mx1.x.test", false]);
    expect(loop.replyFor("x.test")).toBe("mail for x.test loops back to myself");
    expect(me.connections).toBe(0);
  });

  test("our own address is skipped and the next MX gets the message", async () => {
    const { me, isOwnAddress } = await self();
    const other = await mx("127.0.0.3", { port: me.port });
    const conn = await transport(me.port, { isOwnAddress }).connect(dest(["mx1.x.test", "mx2.x.test"]));
    expect(conn.mx).toBe("mx2.x.test");
    await conn.close();
    expect([me.connections, other.connections]).toEqual([0, 1]);
  });

  test("our own address beside an MX that cannot be looked up now is a temporary failure, not a loop", async () => {
    const { me, isOwnAddress } = await self();
    const err = await transport(me.port, { isOwnAddress }).connect(dest(["mx1.x.test", "nowhere.x.test"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectFailure);
    expect(err).not.toBeInstanceOf(LoopsBackToMyself);
    expect((err as ConnectFailure).message).toContain("mx1.x.test[127.0.0.2]:" + me.port + ": our own address, skipped");
    expect(me.connections).toBe(0);
  });

  test("the same address on another port is not ours", async () => {
    const { me } = await self();
    const elsewhere = ownAddresses([{ ip: "127.0.0.2", port: me.port + 1 }]);
    const conn = await transport(me.port, { isOwnAddress: elsewhere }).connect(dest(["mx1.x.test"]));
    await conn.close();
    expect(me.connections).toBe(1);
  });

  test("a static route to our own listener is dialled: that loop is on purpose, and the hop limit ends it", async () => {
    const { me, isOwnAddress } = await self();
    const route: Destination = { key: "route", hosts: [{ host: "127.0.0.2", port: me.port, preference: 0 }], tls: "opportunistic", static: true };
    const conn = await transport(1, { isOwnAddress, lookup: async (h) => [h] }).connect(route);
    await conn.close();
    expect(me.connections).toBe(1);
  });
});

const SMTP_SINK = "/usr/sbin/smtp-sink";

describe.skipIf(!existsSync(SMTP_SINK))("SmtpTransport against Postfix's smtp-sink", () => {
  test("delivers several messages over one connection to a real SMTP server, dot-stuffed correctly", async () => {
    const dir = mkdtempSync(join(tmpdir(), "outpost-sink-"));
    const port = await freePort("127.0.0.4");
    // -d: one dump file per transaction; the file name gets a random suffix
    const sink = Bun.spawn([SMTP_SINK, "-u", "root", "-d", join(dir, "msg."), `127.0.0.4:${port}`, "10"], { stdout: "ignore", stderr: "pipe" });
    try {
      const t = transport(port);
      const conn = await connectWhenListening(t);
      const bodies = ["Subject: one\r\n\r\n.dot line\r\nend\r\n", "Subject: two\r\n\r\nsecond\r\n"];
      const results = [];
      for (const body of bodies) results.push(...(await conn.send(message(["a@x.test", "b@x.test"], body))));
      await conn.close();
      expect(results.map((r) => [r.outcome, r.code])).toEqual(Array(4).fill(["delivered", 250]));
      const dumps = await waitForFiles(dir, 2);
      const all = dumps.map((f) => readFileSync(join(dir, f), "latin1")).join("\n");
      // smtp-sink dumps with LF line ends; the dot line came back un-stuffed, so the stuffing was right
      expect(all).toContain("Subject: one\n\n.dot line\nend\n");
      expect(all).toContain("Subject: two\n\nsecond\n");
      expect(all).toContain("X-Helo-Args: outpost.test");
    } finally {
      sink.kill();
      await sink.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function waitUntil(fn: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await Bun.sleep(10);
  }
}

async function connectWhenListening(t: SmtpTransport) {
  const until = Date.now() + 5000;
  for (;;) {
    try {
      return await t.connect(dest(["mx3.x.test"]));
    } catch (e) {
      if (Date.now() > until) throw e;
      await Bun.sleep(50);
    }
  }
}

async function waitForFiles(dir: string, n: number): Promise<string[]> {
  const until = Date.now() + 5000;
  while (Date.now() < until) {
    const files = readdirSync(dir);
    if (files.length >= n) return files;
    await Bun.sleep(50);
  }
  throw new Error(`smtp-sink wrote ${readdirSync(dir).length} of ${n} dump files`);
}
