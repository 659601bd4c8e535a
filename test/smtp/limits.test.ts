/**
 * SMTP limits tried as an attacker would: AUTH guesses in parallel, IPv6 clients by their /64, the total
 * connection cap, idle unauthenticated sessions. Real SMTP clients (nodemailer's smtp-connection, raw sockets)
 * against a listener whose credential check is counted and can be held, so "guesses in flight" are real.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { CredentialChecker, type User } from "../../src/auth/users.ts";
import { parseCidr } from "../../src/config/units.ts";
import { startSmtp, type SmtpDeps, type SmtpService } from "../../src/smtp/server.ts";
import type { CredentialCheck } from "../../src/smtp/session.ts";
import { waitFor } from "../helpers/harness.ts";
import { addTestUser, messageRow, queueIdIn, RawSmtp, startOutpost, type Outpost } from "./fixture.ts";

const CONFIG = `
[smtp]
max_connections_per_ip = 30
auth_failures_before_block = 5
auth_block_time = "10m"

# delivery cannot route (its DNS server is a closed port), so it never loads a message these tests queue
[dns]
servers = ["127.0.0.1:9"]
[delivery]
sandbox = false
`;

/** Counts the password checks that reach the slow hash; while `held`, each waits until `let go`. */
class CountingCheck implements CredentialCheck {
  calls = 0;
  private gate: Promise<void> = Promise.resolve();
  private open: () => void = () => {};
  constructor(private real: CredentialChecker) {}
  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }
  letGo(): void {
    this.open();
    this.gate = Promise.resolve();
  }
  async check(name: string, password: string): Promise<User | null> {
    this.calls++;
    await this.gate;
    return this.real.check(name, password);
  }
  cached(name: string, password: string): User | null {
    return this.real.cached(name, password);
  }
}

let o: Outpost;
let smtp: SmtpService;
let port: number;
let credentials: CountingCheck;
/** AUTH commands that reached the session hooks */
let authsArrived = 0;

beforeAll(async () => {
  o = await startOutpost(CONFIG);
  await addTestUser(o, "alice", "alice-secret-1");
  await addTestUser(o, "relay", "relay-secret-1");
  credentials = new CountingCheck(new CredentialChecker(o.rt.store.db));
  smtp = await startSmtp({
    config: o.rt.config,
    intake: o.rt.intake,
    bounces: o.rt.bounces,
    credentials,
    log: o.rt.log,
    closeTimeoutMs: 500,
  });
  port = smtp.addresses()[0]!.port;
  const onAuth = smtp.hooks.onAuth.bind(smtp.hooks);
  smtp.hooks.onAuth = (auth, session, cb) => {
    authsArrived++;
    onAuth(auth, session, cb);
  };
});

// stopping waits for delivery's route lookups in flight: each asks the closed DNS port above for up to 2 × 2 s,
// past the hooks' default 5 s on a busy machine
afterAll(async () => {
  await smtp?.stop();
  await o?.stop();
}, 20_000);

/** An smtp-connection session from `localAddress`, greeted and past EHLO (AUTH is allowed in clear from loopback). */
async function client(localAddress: string): Promise<SMTPConnection> {
  const c = new SMTPConnection({ host: "127.0.0.1", port, localAddress, ignoreTLS: true, connectionTimeout: 10_000, socketTimeout: 30_000 });
  c.on("error", () => {}); // a 421 closes the connection; the login callback reports it
  await new Promise<void>((resolve, reject) => c.connect((err) => (err ? reject(err) : resolve())));
  return c;
}

/** The reply code to AUTH PLAIN: 235, 535, 421 … */
function login(c: SMTPConnection, user: string, pass: string): Promise<number> {
  return new Promise((resolve) =>
    c.login({ user, pass, method: "PLAIN" }, (err) => {
      resolve(err ? ((err as { responseCode?: number }).responseCode ?? 0) : 235);
      c.close();
    }),
  );
}

describe("AUTH guesses in parallel", () => {
  test("20 wrong passwords at once from one client get at most auth_failures_before_block verified, and a right one sent while they are in flight is refused", async () => {
    const ip = "127.0.0.51";
    const sessions = await Promise.all(Array.from({ length: 20 }, () => client(ip)));
    const before = { calls: credentials.calls, arrived: authsArrived };
    credentials.hold(); // every verification takes as long as we like: all guesses are in flight together
    const wrong = sessions.slice(0, 19).map((c, i) => login(c, "alice", `wrong-guess-${i}`));
    await waitFor(() => authsArrived - before.arrived === 19, 5000, "19 AUTH commands at the server");
    const right = login(sessions[19]!, "alice", "alice-secret-1");
    await waitFor(() => authsArrived - before.arrived === 20, 5000, "the 20th AUTH at the server");
    credentials.letGo();
    const replies = [...(await Promise.all(wrong)), await right];

    expect(credentials.calls - before.calls).toBeLessThanOrEqual(5);
    expect(replies[19]).toBe(421); // the right password, but the client ran out of guesses meanwhile
    expect(replies.filter((r) => r === 535).length).toBe(4); // the fifth failure is answered 421: blocked
    expect(replies.filter((r) => r === 421).length).toBe(16);
    expect(o.logs).toContainEqual(expect.objectContaining({ event: "smtp_auth_failed", client_ip: ip, failures: 5, blocked: true }));

    // a right password arriving after the block: refused at connect, nothing verified
    const calls = credentials.calls;
    const late = await RawSmtp.connect(port, { localAddress: ip });
    expect(await late.reply()).toMatch(/^421 4\.7\.0 outpost\.test too many failed authentications/);
    late.close();
    expect(credentials.calls).toBe(calls);
  });

  test("a smart host's 20 connections logging in at once with the right password all get in", async () => {
    const ip = "127.0.0.52";
    const sessions = await Promise.all(Array.from({ length: 20 }, () => client(ip)));
    const replies = await Promise.all(sessions.map((c) => login(c, "relay", "relay-secret-1")));
    expect(replies).toEqual(Array(20).fill(235));
  }, 20_000);
});

/** Another listener on this outpost, with these smtp settings and deps. */
async function listener(smtpConfig: Partial<SmtpDeps["config"]["smtp"]>, deps: Partial<SmtpDeps> = {}): Promise<SmtpService> {
  return startSmtp({
    config: { ...o.rt.config, smtp: { ...o.rt.config.smtp, ...smtpConfig } },
    intake: o.rt.intake,
    bounces: o.rt.bounces,
    credentials: new CredentialChecker(o.rt.store.db),
    log: o.rt.log,
    closeTimeoutMs: 500,
    ...deps,
  });
}

describe("connections", () => {
  test("max_connections: beyond it any client is answered 421 4.7.0 too many connections, and a closed one frees a place", async () => {
    const capped = await listener({ max_connections: 3 });
    const p = capped.addresses()[0]!.port;
    const open = await Promise.all(["127.0.0.61", "127.0.0.62", "127.0.0.63"].map((ip) => RawSmtp.connect(p, { localAddress: ip })));
    try {
      for (const c of open) expect(await c.reply()).toMatch(/^220 /);
      const fourth = await RawSmtp.connect(p, { localAddress: "127.0.0.64" });
      expect(await fourth.reply()).toMatch(/^421 4\.7\.0 outpost\.test too many connections, try again later/);
      expect(await fourth.waitClosed()).toBe(true);
      expect(o.logs).toContainEqual(expect.objectContaining({ event: "smtp_refused", client_ip: "127.0.0.64", reason: "max_connections" }));
      open[0]!.write("QUIT\r\n");
      expect(await open[0]!.reply()).toMatch(/^221/);
      await open[0]!.waitClosed();
      await waitFor(() => capped.hooks.connections.size === 2, 5000, "the closed connection's place");
      const again = await RawSmtp.connect(p, { localAddress: "127.0.0.64" });
      expect(await again.reply()).toMatch(/^220 /);
      again.close();
    } finally {
      open.forEach((c) => c.close());
      await capped.stop();
    }
  });

  test("an idle session that has not authenticated is closed after the short idle timeout; an authenticated or trusted one is not", async () => {
    const short = await listener({ trusted_networks: [parseCidr("127.0.0.73")] }, { idleTimeouts: { unauthenticatedMs: 1000, sessionMs: 60_000 } });
    const p = short.addresses()[0]!.port;
    const sessions: RawSmtp[] = [];
    /** a session past EHLO; each step is quicker than the short timeout */
    const session = async (ip: string) => {
      const c = await RawSmtp.connect(p, { localAddress: ip });
      sessions.push(c);
      expect(await c.reply()).toMatch(/^220 /);
      c.write("EHLO idle.test\r\n");
      expect(await c.reply()).toMatch(/^250/);
      return c;
    };
    const login = async (c: RawSmtp) => {
      c.write(`AUTH PLAIN ${Buffer.from("\0alice\0alice-secret-1").toString("base64")}\r\n`);
      expect(await c.reply()).toMatch(/^235/);
    };
    try {
      const tlsUser = await session("127.0.0.75");
      tlsUser.write("STARTTLS\r\n");
      expect(await tlsUser.reply()).toMatch(/^220/);
      await tlsUser.starttls();
      tlsUser.write("EHLO idle.test\r\n");
      expect(await tlsUser.reply()).toMatch(/^250/);
      await login(tlsUser);
      const user = await session("127.0.0.72");
      await login(user);
      const trusted = await session("127.0.0.73");
      const stranger = await session("127.0.0.71");
      expect(await stranger.reply()).toMatch(/^421 .*Timeout/);
      expect(await stranger.waitClosed()).toBe(true);
      // a second stranger idles out too: by then the others have been idle longer than the short timeout
      const later = await RawSmtp.connect(p, { localAddress: "127.0.0.74" });
      sessions.push(later);
      expect(await later.reply()).toMatch(/^220 /);
      expect(await later.reply()).toMatch(/^421 .*Timeout/);
      for (const c of [user, trusted, tlsUser]) {
        c.write("NOOP\r\n");
        expect(await c.reply()).toMatch(/^250/);
      }
    } finally {
      sessions.forEach((c) => c.close());
      await short.stop();
    }
  });
});

/** Runs `fn` while counting the Buffers of at least `min` bytes that JavaScript code allocates (copies of a message). */
async function bigAllocations(min: number, fn: () => Promise<void>): Promise<number[]> {
  const sizes: number[] = [];
  const spied = ["concat", "from", "alloc", "allocUnsafe", "allocUnsafeSlow"] as const;
  const originals = spied.map((name) => Buffer[name]);
  spied.forEach((name, i) => {
    const original = originals[i] as (...a: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
      const b = original.apply(Buffer, args);
      // Buffer.from(arrayBuffer, offset, length) is a view of memory that exists already: no copy
      if (b.length >= min && !(args[0] instanceof ArrayBuffer)) sizes.push(b.length);
      return b;
    };
  });
  try {
    await fn();
  } finally {
    spied.forEach((name, i) => ((Buffer as unknown as Record<string, unknown>)[name] = originals[i]));
  }
  return sizes;
}

describe("memory per message", () => {
  test("a large message goes into the queue from one buffer: received once, line ends normalised on the way, never copied whole", async () => {
    const lines = Array.from({ length: 40_000 }, (_, i) => `line ${i} ${"x".repeat(80)}${i % 3 === 0 ? "\n" : "\r\n"}`);
    const message = Buffer.from(`From: big@example.org\nSubject: big\n\n${lines.join("")}`, "latin1"); // ~3.6 MB, bare LFs
    const c = await RawSmtp.connect(port, { localAddress: "127.0.0.81" });
    let reply = "";
    try {
      expect(await c.reply()).toMatch(/^220/);
      c.write(`EHLO big.test\r\nAUTH PLAIN ${Buffer.from("\0alice\0alice-secret-1").toString("base64")}\r\n`);
      expect(await c.reply()).toMatch(/^250/);
      expect(await c.reply()).toMatch(/^235/);
      const sizes = await bigAllocations(1 << 20, async () => {
        c.write("MAIL FROM:<big@example.org>\r\nRCPT TO:<someone@example.com>\r\nDATA\r\n");
        for (const code of [/^250/, /^250/, /^354/]) expect(await c.reply()).toMatch(code);
        c.write(message);
        c.write("\r\n.\r\n");
        reply = await c.reply(20_000);
      });
      expect(reply).toMatch(/^250 2\.0\.0 Ok: queued as/);
      expect(sizes.length).toBe(1); // the one buffer it was received into
    } finally {
      c.close();
    }
    const stored = Buffer.from(messageRow(o, queueIdIn(reply))!.body).toString("latin1");
    expect(stored).toStartWith("Received: from big.test ([127.0.0.81])");
    expect(stored).toEndWith(`${lines.join("").replace(/\r?\n/g, "\r\n")}\r\n`);
    expect(stored).not.toMatch(/[^\r]\n|\r[^\n]/);
  }, 30_000);

  test("max_message_size counts the bytes the client sent, not the CRLFs its bare LFs became", async () => {
    const limit = 1000;
    const small = await startOutpost(`[smtp]\nmax_message_size = ${limit}\n`); // intake counts it too
    await addTestUser(small, "alice", "alice-secret-1");
    const p = small.port;
    const head = "Subject: exactly at the limit!\n\n";
    const body = `${head}${"a\n".repeat((limit - head.length - 2) / 2)}\r\n`; // ends with the CRLF before the dot
    expect(body.length).toBe(limit);
    const c = await RawSmtp.connect(p, { localAddress: "127.0.0.82" });
    try {
      expect(await c.reply()).toMatch(/^220/);
      c.write(`EHLO x\r\nAUTH PLAIN ${Buffer.from("\0alice\0alice-secret-1").toString("base64")}\r\nMAIL FROM:<limit@example.org>\r\n`);
      for (const code of [/^250/, /^235/, /^250/]) expect(await c.reply()).toMatch(code);
      c.write("RCPT TO:<someone@example.com>\r\nDATA\r\n");
      for (const code of [/^250/, /^354/]) expect(await c.reply()).toMatch(code);
      c.write(`${body}.\r\n`);
      expect(await c.reply()).toMatch(/^250 2\.0\.0 Ok: queued as/);
      c.write(`MAIL FROM:<limit@example.org>\r\nRCPT TO:<someone@example.com>\r\nDATA\r\n`);
      for (const code of [/^250/, /^250/, /^354/]) expect(await c.reply()).toMatch(code);
      c.write(`x${body}.\r\n`);
      expect(await c.reply()).toMatch(/^552 5\.3\.4/);
    } finally {
      c.close();
      await small.stop();
    }
  });
});
