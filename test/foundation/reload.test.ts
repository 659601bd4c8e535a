/**
 * `outpost serve` as a child process, sent SIGHUP (what `systemctl reload` does) after its config file or its
 * certificate files changed: new routes and certificates apply without a restart, an invalid file is refused with
 * the message a start would print while the process carries on as before, and a key that needs a restart is named.
 */
import { afterEach, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { selfSignedCertificate } from "../../src/smtp/self-signed.ts";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { freePort, tempDir, waitFor } from "../helpers/harness.ts";
import { serveUntilExit, startServe, type ServeProcess } from "../helpers/serve.ts";
import { RawSmtp } from "../smtp/fixture.ts";

let serve: ServeProcess | null = null;
const receivers: FakeMx[] = [];
let dir: ReturnType<typeof tempDir> | null = null;

afterEach(async () => {
  if (serve && serve.proc.exitCode === null) {
    serve.proc.kill("SIGKILL");
    await serve.proc.exited;
  }
  for (const mx of receivers.splice(0)) await mx.stop();
  dir?.cleanup();
  serve = dir = null;
});

interface Settings {
  /** where `[[delivery.route]] domain = "*"` sends mail */
  mx: FakeMx;
  /** the [smtp] listen list */
  listen?: string;
  /** more lines for [smtp] */
  smtp?: string;
  /** more lines at the top */
  top?: string;
}

/** Writes DIR/outpost.toml: SMTP on loopback (127/8 trusted), HTTP on port 0, everything routed to `mx`. */
function writeConfig(path: string, s: Settings): string {
  const file = join(path, "outpost.toml");
  writeFileSync(file, `${s.top ?? ""}
data_dir = ${JSON.stringify(join(path, "data"))}
hostname = "outpost.test"
[smtp]
listen = ${s.listen ?? `["127.0.0.1:0"]`}
trusted_networks = ["127.0.0.0/8"]
${s.smtp ?? ""}
[http]
listen = "127.0.0.1:0"
[[delivery.route]]
domain = "*"
host = "${s.mx.host}"
port = ${s.mx.port}
`);
  return file;
}

async function receiver(host: string): Promise<FakeMx> {
  const mx = await startFakeMx({ host });
  receivers.push(mx);
  return mx;
}

/** The JSON log lines `serve` wrote with this event name. */
function events(s: ServeProcess, name: string): Array<Record<string, unknown>> {
  return s.out().split("\n").filter((l) => l.includes(`"event":"${name}"`)).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Sends SIGHUP and waits for the reload's outcome line (the nth of its kind). */
async function sighup(s: ServeProcess, outcome: "config_reloaded" | "config_reload_refused"): Promise<Record<string, unknown>> {
  const before = events(s, outcome).length;
  s.proc.kill("SIGHUP");
  return waitFor(() => events(s, outcome)[before], 10_000, `${outcome} after SIGHUP; stdout:\n${s.out()}`);
}

/** One message over SMTP from a trusted address (no AUTH); returns the server's reply to the final dot. */
async function send(port: number, subject: string): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    for (const line of ["EHLO client.test", "MAIL FROM:<app@example.org>", "RCPT TO:<someone@dest.test>", "DATA"]) {
      c.write(`${line}\r\n`);
      await c.reply();
    }
    c.write(`Subject: ${subject}\r\n\r\nbody\r\n.\r\n`);
    return await c.reply();
  } finally {
    c.close();
  }
}

const subjects = (mx: FakeMx) => mx.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString())?.[1]);

test("after a route's host changes and SIGHUP, the next message goes to the new host", async () => {
  dir = tempDir();
  const [first, second] = [await receiver("127.0.0.41"), await receiver("127.0.0.42")];
  const config = writeConfig(dir.path, { mx: first });
  serve = await startServe(config);
  expect(await send(serve.smtpPort, "before")).toStartWith("250");
  await waitFor(() => first.messages.length === 1, 10_000, "the first message at the first host");

  writeConfig(dir.path, { mx: second });
  const reloaded = await sighup(serve, "config_reloaded");
  expect(reloaded.changed).toEqual(["delivery.route"]);
  expect(events(serve, "config_needs_restart")).toEqual([]);

  expect(await send(serve.smtpPort, "after")).toStartWith("250");
  await waitFor(() => second.messages.length === 1, 10_000, `the second message at the second host; stdout:\n${serve.out()}`);
  expect(subjects(second)).toEqual(["after"]);
  expect(subjects(first)).toEqual(["before"]);
}, 40_000);

test("a domain whose host stopped answering goes to the host a reload routes it to, without waiting out the dead one", async () => {
  dir = tempDir();
  const working = await receiver("127.0.0.48");
  // a host that refuses connections: after three failed connections in a row it is held back as unreachable
  const dead = { host: "127.0.0.49", port: await freePort("127.0.0.49") } as FakeMx;
  serve = await startServe(writeConfig(dir.path, { mx: dead }));
  const deferred = () => events(serve!, "delivery").filter((l) => l.status === "deferred");
  for (let i = 1; i <= 4; i++) {
    expect(await send(serve.smtpPort, `while down ${i}`)).toStartWith("250");
    await waitFor(() => deferred().length >= i, 20_000, `deferral ${i}; stdout:\n${serve.out()}`);
  }
  expect(String(deferred()[3]!.reply)).toContain("destination marked unreachable");

  writeConfig(dir.path, { mx: working });
  expect((await sighup(serve, "config_reloaded")).changed).toEqual(["delivery.route"]);
  expect(await send(serve.smtpPort, "after the reload")).toStartWith("250");
  await waitFor(() => subjects(working).includes("after the reload"), 10_000, `the new message at the working host; stdout:\n${serve.out()}`);
}, 60_000);

test("after the certificate files are replaced and SIGHUP, a new STARTTLS session gets the new certificate", async () => {
  dir = tempDir();
  const mx = await receiver("127.0.0.43");
  const [certFile, keyFile] = [join(dir.path, "cert.pem"), join(dir.path, "key.pem")];
  const install = (pems: { cert: string; key: string }) => {
    writeFileSync(certFile, pems.cert);
    writeFileSync(keyFile, pems.key);
    return new X509Certificate(pems.cert).fingerprint256;
  };
  const oldPrint = install(selfSignedCertificate("old.outpost.test"));
  serve = await startServe(writeConfig(dir.path, { mx, smtp: `tls_cert = "${certFile}"\ntls_key = "${keyFile}"` }));
  expect(await presented(serve.smtpPort)).toBe(oldPrint);

  const newPrint = install(selfSignedCertificate("new.outpost.test"));
  expect(newPrint).not.toBe(oldPrint);
  const reloaded = await sighup(serve, "config_reloaded");
  expect(reloaded).toMatchObject({ changed: [], tls_certificate: newPrint, tls_certificate_replaced: true });
  expect(await presented(serve.smtpPort)).toBe(newPrint);

  // a certificate that is not the key's: refused, the one in use stays
  writeFileSync(certFile, selfSignedCertificate("other.outpost.test").cert);
  const refused = await sighup(serve, "config_reload_refused");
  expect(String(refused.error)).toStartWith(`cannot use the certificate ${certFile} with its key: `);
  expect(await presented(serve.smtpPort)).toBe(newPrint);
}, 40_000);

/** The fingerprint of the certificate a STARTTLS session on `port` is shown. */
async function presented(port: number): Promise<string | undefined> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    c.write("EHLO client.test\r\n");
    await c.reply();
    c.write("STARTTLS\r\n");
    expect(await c.reply()).toStartWith("220");
    await c.starttls();
    return c.peerCertificate()?.fingerprint256;
  } finally {
    c.close();
  }
}

test("an invalid config on SIGHUP is logged as a start would print it, and the running config stays in force", async () => {
  dir = tempDir();
  const [first, second] = [await receiver("127.0.0.44"), await receiver("127.0.0.45")];
  const config = writeConfig(dir.path, { mx: first });
  serve = await startServe(config);

  // a new route, and a typo: nothing of the file may apply
  writeConfig(dir.path, { mx: second, smtp: "max_recipents = 10" });
  const refusedStart = await serveUntilExit(config);
  expect(refusedStart.code).toBe(2);
  const refused = await sighup(serve, "config_reload_refused");
  expect(`outpost: ${String(refused.error)}`).toBe(refusedStart.err.trim());
  expect(refused.error).toContain("smtp.max_recipents: unknown key");

  expect(serve.proc.exitCode).toBeNull();
  expect(await send(serve.smtpPort, "still the old route")).toStartWith("250");
  await waitFor(() => first.messages.length === 1, 10_000, "the message at the host of the running config");
  expect(second.messages).toEqual([]);

  // still the same process, stopping as it always does
  serve.proc.kill("SIGTERM");
  expect(await serve.proc.exited).toBe(0);
}, 40_000);

test("a changed listen address on SIGHUP is named as needing a restart, and the old listener keeps serving", async () => {
  dir = tempDir();
  const mx = await receiver("127.0.0.46");
  serve = await startServe(writeConfig(dir.path, { mx }));

  writeConfig(dir.path, { mx, listen: `["127.0.0.47:0"]`, top: `log_level = "info"` });
  const reloaded = await sighup(serve, "config_reloaded");
  expect(reloaded.changed).toEqual([]);
  const warning = await waitFor(() => events(serve!, "config_needs_restart")[0], 5_000, "the needs-a-restart warning");
  expect(warning).toMatchObject({ level: "warn", keys: ["smtp.listen"] });
  expect(String(warning.message)).toContain("needs a restart: smtp.listen");

  expect(await send(serve.smtpPort, "old listener")).toStartWith("250");
  await waitFor(() => mx.messages.length === 1, 10_000, "the message through the old listener");
}, 40_000);
