/**
 * Real SMTP clients against outpost's listeners: Python smtplib (STARTTLS + AUTH, and SMTP_SSL on
 * tls_listen), swaks (AUTH PLAIN and LOGIN over STARTTLS) and nodemailer; each message must be in
 * the queue, intact, before we look.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";
import tls from "node:tls";
import nodemailer from "nodemailer";
import { CredentialChecker } from "../../src/auth/users.ts";
import { startSmtp } from "../../src/smtp/server.ts";
import { waitFor } from "../helpers/harness.ts";
import { addTestUser, hasCommand, messageRow, queueIdIn, RawSmtp, recipientsOf, run, startOutpost, type Outpost } from "./fixture.ts";

let o: Outpost;

beforeAll(async () => {
  o = await startOutpost(`
[smtp]
listen = ["127.0.0.1:0", "[::1]:0"]
tls_listen = ["127.0.0.1:0"]
max_connections_per_ip = 3

[tracking]
bounce_domain = "bounces.outpost.test"
inline_css = true
`);
  await addTestUser(o, "carol", "carol-pass-9");
});

afterAll(async () => {
  await o?.stop();
});

const PY_SUBMIT = `
import smtplib, ssl, sys
host, port, mode, mech, user, pw = sys.argv[1:7]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = "From: carol@example.org\\r\\nTo: dave@example.net\\r\\nSubject: smtplib " + mode + " " + mech + "\\r\\n\\r\\nHello from Python.\\r\\n"
if mode == "ssl":
    s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=10)
else:
    s = smtplib.SMTP(host, int(port), timeout=10)
    s.ehlo(); s.starttls(context=ctx)
s.ehlo()
if mech == "LOGIN":
    s.user, s.password = user, pw
    s.auth("LOGIN", s.auth_login)
else:
    s.login(user, pw)  # what most scripts call; smtplib picks PLAIN from our AUTH list
code, resp = s.mail("carol@example.org")
s.rcpt("dave@example.net")
code, resp = s.data(msg)
print(code, resp.decode())
s.quit()
`;

describe.skipIf(!hasCommand("python3"))("Python smtplib", () => {
  for (const [mode, mech] of [["starttls", "LOGIN"], ["starttls", "PLAIN"], ["ssl", "PLAIN"]] as const) {
    test(`submits over ${mode === "ssl" ? "implicit TLS (SMTP_SSL on tls_listen)" : "STARTTLS"} with AUTH ${mech}`, async () => {
      const port = mode === "ssl" ? o.tlsPort! : o.port;
      const r = await run(["python3", "-c", PY_SUBMIT, "127.0.0.1", String(port), mode, mech, "carol", "carol-pass-9"]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(/^250 2\.0\.0 Ok: queued as [0-9a-z]+$/m);
      const row = messageRow(o, queueIdIn(r.stdout))!;
      expect(row.envelope_from).toBe("carol@example.org");
      expect(row.subject).toBe(`smtplib ${mode} ${mech}`);
      expect(Buffer.from(row.body).toString()).toContain("\r\n\r\nHello from Python.\r\n");
      expect(recipientsOf(o, row.id)).toEqual(["dave@example.net"]);
    });
  }

  test("a wrong password is 535 5.7.8", async () => {
    const r = await run(["python3", "-c", PY_SUBMIT, "127.0.0.1", String(o.port), "starttls", "PLAIN", "carol", "nope"]);
    expect(r.stderr).toContain("535");
    expect(r.stderr).toContain("5.7.8");
  });
});

describe.skipIf(!hasCommand("swaks"))("swaks", () => {
  for (const mech of ["PLAIN", "LOGIN"]) {
    test(`submits with --tls and AUTH ${mech}`, async () => {
      const r = await run([
        "swaks", "--server", `127.0.0.1:${o.port}`, "--tls", "--auth", mech, "--auth-user", "carol", "--auth-password", "carol-pass-9",
        "--from", "carol@example.org", "--to", "erin@example.com", "--header", `Subject: swaks ${mech}`, "--body", "swaks body line",
      ]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`AUTH ${mech}`);
      const row = messageRow(o, queueIdIn(r.stdout))!;
      expect(row.subject).toBe(`swaks ${mech}`);
      expect(Buffer.from(row.body).toString()).toContain("swaks body line");
      // no X-Outpost-* headers: the [tracking] defaults (inline_css = true above, the rest false)
      expect([row.inline_css, row.track_clicks, row.track_opens, row.track_bounces]).toEqual([1, 0, 0, 0]);
    });
  }

  test("reaches the IPv6 listener on ::1", async () => {
    const v6 = o.rt.smtp!.addresses().find((a) => a.host === "::1")!;
    const r = await run(["swaks", "--server", `::1`, "--port", String(v6.port), "-6", "--tls", "--auth", "PLAIN", "--auth-user", "carol",
      "--auth-password", "carol-pass-9", "--from", "carol@example.org", "--to", "v6@example.com"]);
    expect(r.code).toBe(0);
    expect(messageRow(o, queueIdIn(r.stdout))).not.toBeNull();
  });
});

describe("nodemailer as a client", () => {
  test("sends with requireTLS and AUTH, and the X-Outpost-* options are stored and removed", async () => {
    const t = nodemailer.createTransport({
      host: "127.0.0.1", port: o.port, secure: false, requireTLS: true,
      auth: { user: "carol", pass: "carol-pass-9" }, tls: { rejectUnauthorized: false },
    });
    const info = await t.sendMail({
      from: "carol@example.org",
      to: ["frank@example.com", "grace@example.com"],
      subject: "Grüße via nodemailer",
      text: "plain part",
      html: "<p>html part</p>",
      headers: { "X-Outpost-Track-Clicks": "yes", "X-Outpost-Inline-CSS": "no", "X-Outpost-Track-Opens": "yes" },
    });
    t.close();
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
    const row = messageRow(o, queueIdIn(info.response))!;
    expect(row.subject).toBe("Grüße via nodemailer");
    expect([row.track_clicks, row.inline_css, row.track_opens, row.track_bounces]).toEqual([1, 0, 1, 0]);
    const body = Buffer.from(row.body).toString();
    expect(body).not.toMatch(/X-Outpost-/i);
    expect(body).toMatch(/^Received: from [^\r\n]+\r\n\tby outpost\.test \(outpost\) with ESMTPSA/);
    expect(recipientsOf(o, row.id)).toEqual(["frank@example.com", "grace@example.com"]);
  });
});

describe("limits and failures", () => {
  test("max_connections_per_ip: the fourth connection from one address gets 421 4.7.0", async () => {
    const conns = await Promise.all([1, 2, 3].map(() => RawSmtp.connect(o.port, { localAddress: "127.0.0.7" })));
    try {
      for (const c of conns) expect(await c.reply()).toMatch(/^220 /);
      const fourth = await RawSmtp.connect(o.port, { localAddress: "127.0.0.7" });
      expect(await fourth.reply()).toMatch(/^421 4\.7\.0 .*too many connections/);
      expect(await fourth.waitClosed()).toBe(true);
      const other = await RawSmtp.connect(o.port, { localAddress: "127.0.0.8" });
      expect(await other.reply()).toMatch(/^220 /);
      other.close();
      conns[0]!.write("QUIT\r\n");
      expect(await conns[0]!.reply()).toMatch(/^221/);
      await conns[0]!.waitClosed();
      await Bun.sleep(50);
      const again = await RawSmtp.connect(o.port, { localAddress: "127.0.0.7" });
      expect(await again.reply()).toMatch(/^220 /);
      again.close();
    } finally {
      conns.forEach((c) => c.close());
    }
  });

  test("max_connections_per_ip on tls_listen counts TCP connections before the TLS handshake; over it, the socket is closed at once", async () => {
    const ip = "127.0.0.12";
    const silent = await Promise.all([1, 2, 3].map(() => openTcp(o.tlsPort!, ip))); // never send a TLS hello
    try {
      await Bun.sleep(100); // let the server accept all three
      const logsBefore = o.logs.length;
      expect(await tlsGreeting(o.tlsPort!, ip)).toBe("closed");
      expect(o.logs.slice(logsBefore)).toContainEqual(expect.objectContaining({ event: "smtp_refused", client_ip: ip, reason: "max_connections_per_ip", tls: true }));
      expect(await tlsGreeting(o.tlsPort!, "127.0.0.13")).toMatch(/^220 /); // another address is not affected
      silent[0]!.destroy();
      await Bun.sleep(100);
      expect(await tlsGreeting(o.tlsPort!, ip)).toMatch(/^220 /); // a closed socket frees its place
    } finally {
      silent.forEach((s) => s.destroy());
    }
  });

  test("connections that end in every way give their place back: failed TLS handshakes, TLS sessions, STARTTLS sessions", async () => {
    const ip = "127.0.0.14"; // max_connections_per_ip = 3: a leak of one place per connection shows within four
    for (let i = 0; i < 5; i++) {
      const junk = await openTcp(o.tlsPort!, ip);
      junk.write("EHLO not-tls\r\n"); // no TLS hello: the handshake fails (the server may keep the socket: we close it)
      await new Promise((resolve) => (junk.once("close", resolve), setTimeout(resolve, 300)));
      junk.destroy();
      expect(await tlsGreeting(o.tlsPort!, ip)).toMatch(/^220 /); // a full TLS session, closed by the client
      const plain = await RawSmtp.connect(o.port, { localAddress: ip });
      expect(await plain.reply()).toMatch(/^220 /);
      plain.write("EHLO x\r\n");
      await plain.reply();
      plain.write("STARTTLS\r\n");
      expect(await plain.reply()).toMatch(/^220 /);
      plain.close(); // gone in the middle of the upgrade
    }
    await Bun.sleep(200);
    expect(await tlsGreeting(o.tlsPort!, ip)).toMatch(/^220 /);
    const last = await RawSmtp.connect(o.port, { localAddress: ip });
    expect(await last.reply()).toMatch(/^220 /);
    last.close();
  }, 30_000);

  test("a failure before the commit is answered 451 4.3.0 and nothing is stored", async () => {
    o.rt.store.sqlite.exec(`CREATE TRIGGER fail_insert BEFORE INSERT ON messages BEGIN SELECT RAISE(FAIL, 'disk on fire'); END`);
    try {
      const t = nodemailer.createTransport({ host: "127.0.0.1", port: o.port, auth: { user: "carol", pass: "carol-pass-9" }, tls: { rejectUnauthorized: false } });
      const err = await t.sendMail({ from: "fail@example.org", to: "x@example.com", text: "x" }).then(() => null, (e: { response?: string }) => e);
      t.close();
      expect(err?.response).toMatch(/^451 4\.3\.0 /);
      const n = o.rt.store.sqlite.query<{ n: number }, []>(`SELECT count(*) AS n FROM messages WHERE envelope_from = 'fail@example.org'`).get();
      expect(n?.n).toBe(0);
    } finally {
      o.rt.store.sqlite.exec(`DROP TRIGGER fail_insert`);
    }
  });

  test.skipIf(!hasCommand("python3"))("one JSON log line per transaction names queue id, client, user, sender, recipients, size, TLS and result", async () => {
    const r = await run(["python3", "-c", PY_SUBMIT, "127.0.0.1", String(o.port), "starttls", "PLAIN", "carol", "carol-pass-9"]);
    const id = queueIdIn(r.stdout);
    const lines = o.logs.filter((l) => l.event === "smtp_message" && l.queue_id === id);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      client_ip: "127.0.0.1", user: "carol", sender: "carol@example.org", recipients: ["dave@example.net"],
      tls: expect.stringMatching(/^TLSv1\.[23]$/), result: `250 2.0.0 Ok: queued as ${id}`,
    });
    expect(lines[0]!.size).toBeGreaterThan(50);
  });

  test("STARTTLS and implicit TLS present the certificate generated into data_dir, not smtp-server's built-in one", async () => {
    const ours = new X509Certificate(readFileSync(join(o.dir, "tls.crt")));
    expect(ours.subject).toBe("CN=outpost.test");
    const c = await RawSmtp.connect(o.port);
    try {
      expect(await c.reply()).toMatch(/^220 /);
      c.write("EHLO me.test\r\nSTARTTLS\r\n");
      expect(await c.reply()).toMatch(/^250/);
      expect(await c.reply()).toMatch(/^220/);
      expect(c.peerCertificate()).toBeNull();
      await c.starttls();
      expect(c.peerCertificate()?.fingerprint256).toBe(ours.fingerprint256);
    } finally {
      c.close();
    }
    const implicit = tls.connect({ host: "127.0.0.1", port: o.tlsPort!, rejectUnauthorized: false });
    try {
      await new Promise((resolve, reject) => implicit.once("secureConnect", resolve).once("error", reject));
      expect(implicit.getPeerX509Certificate()?.fingerprint256).toBe(ours.fingerprint256);
    } finally {
      implicit.destroy();
    }
  });

  test("the banner and EHLO name the configured hostname and list the extensions docs/smtp.md promises", async () => {
    const c = await RawSmtp.connect(o.port);
    try {
      expect(await c.reply()).toMatch(/^220 outpost\.test ESMTP/);
      c.write("EHLO me.test\r\n");
      const ehlo = await c.reply();
      for (const ext of ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH PLAIN LOGIN", "SIZE 26214400"]) {
        expect(ehlo).toMatch(new RegExp(`^250[- ]${ext}$`, "m"));
      }
      expect(ehlo).toMatch(/^250-outpost\.test /);
    } finally {
      c.close();
    }
  });
});

test("with auth_requires_tls = false a remote client may authenticate before STARTTLS", async () => {
  const config = { ...o.rt.config, smtp: { ...o.rt.config.smtp, auth_requires_tls: false, listen: [{ host: "127.0.0.1", port: 0 }], tls_listen: [] } };
  const smtp = await startSmtp({
    config, intake: o.rt.intake, bounces: o.rt.bounces, credentials: new CredentialChecker(o.rt.store.db), log: o.rt.log,
    isLoopback: () => false, closeTimeoutMs: 200,
  });
  const c = await RawSmtp.connect(smtp.addresses()[0]!.port);
  try {
    expect(await c.reply()).toMatch(/^220 /);
    c.write("EHLO remote.test\r\n");
    expect(await c.reply()).toMatch(/^250-AUTH PLAIN LOGIN$/m);
    c.write(`AUTH PLAIN ${Buffer.from("\0carol\0carol-pass-9").toString("base64")}\r\n`);
    expect(await c.reply()).toMatch(/^235 2\.7\.0/);
  } finally {
    c.close();
    await smtp.stop();
  }
});

test("a remote client on tls_listen (implicit TLS) is offered AUTH and may use it at once", async () => {
  const config = { ...o.rt.config, smtp: { ...o.rt.config.smtp, listen: [], tls_listen: [{ host: "127.0.0.1", port: 0 }] } };
  expect(config.smtp.auth_requires_tls).toBe(true);
  const smtp = await startSmtp({
    config, intake: o.rt.intake, bounces: o.rt.bounces, credentials: new CredentialChecker(o.rt.store.db), log: o.rt.log,
    isLoopback: () => false, closeTimeoutMs: 200,
  });
  const c = tls.connect({ host: "127.0.0.1", port: smtp.addresses()[0]!.port, rejectUnauthorized: false });
  let got = "";
  c.on("data", (d: Buffer) => (got += d.toString("latin1")));
  const replyMatching = (re: RegExp) => waitFor(() => re.test(got), 5000, `a reply matching ${re}; got ${JSON.stringify(got)}`);
  try {
    await replyMatching(/^220 /m);
    c.write("EHLO remote.test\r\n");
    await replyMatching(/^250 /m);
    expect(got).toMatch(/^250-AUTH PLAIN LOGIN$/m);
    c.write(`AUTH PLAIN ${Buffer.from("\0carol\0carol-pass-9").toString("base64")}\r\n`);
    await replyMatching(/^235 2\.7\.0/m);
  } finally {
    c.destroy();
    await smtp.stop();
  }
});

function openTcp(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress }, () => resolve(s));
    s.once("error", reject);
  });
}

/** The first line a real TLS client gets on tls_listen, or "closed" when the server closes the connection first (bounded: 5 s). */
function tlsGreeting(port: number, localAddress: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // Node's tls.connect passes localAddress on to net.connect; its type just does not list it
    const options: tls.ConnectionOptions & net.TcpNetConnectOpts = { host: "127.0.0.1", port, localAddress, rejectUnauthorized: false };
    const s = tls.connect(options);
    const timer = setTimeout(() => (s.destroy(), reject(new Error("no greeting and no close within 5 s"))), 5000);
    const done = (v: string) => (clearTimeout(timer), s.destroy(), resolve(v));
    let buf = "";
    s.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      if (buf.includes("\r\n")) done(buf.split("\r\n")[0]!);
    });
    s.once("error", () => done("closed"));
    s.once("close", () => done("closed"));
  });
}
