/**
 * Large bodies in body files, through serve: accepted over SMTP, delivered byte for byte; deferred, then after a
 * restart delivered from the file (nothing in memory any more); shown by `outpost queue show --body`.
 */
import { expect, test } from "bun:test";
import { existsSync, readdirSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { Runtime } from "../../src/runtime/start.ts";
import { startFakeMx } from "../helpers/fake-mx.ts";
import { endAfterEach, runCli, startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

const own = endAfterEach();

/** About 60 KiB of CRLF lines, with a line that starts with a dot (stuffed on the wire, stored unstuffed). */
const BODY = Buffer.from(
  `From: app@example.com\r\nTo: someone@dest.test\r\nSubject: large\r\n\r\n` +
    Array.from({ length: 800 }, (_, i) => `${i % 50 === 7 ? "." : ""}line ${i} ${"x".repeat(64)}\r\n`).join(""),
);

function smtpPort(rt: Runtime): number {
  return rt.smtp!.addresses()[0]!.port;
}

async function sendOverSmtp(rt: Runtime, to: string): Promise<string> {
  const conn = new SMTPConnection({ host: "127.0.0.1", port: smtpPort(rt), ignoreTLS: true });
  await new Promise<void>((r, j) => conn.connect((e?: Error) => (e ? j(e) : r())));
  try {
    return await new Promise<string>((r, j) =>
      conn.send({ from: "app@example.com", to: [to] }, BODY, (e, info) => (e ? j(e) : r(info.response))),
    );
  } finally {
    conn.quit();
  }
}

const pending = (rt: Runtime) =>
  (rt.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get() as { n: number }).n;
const statusOf = (rt: Runtime) => (rt.store.sqlite.query("SELECT status FROM recipients").get() as { status: string }).status;

test("a large message is kept in a body file, delivered byte for byte, and delivered from that file after a restart", async () => {
  const mx = own(await startFakeMx({ host: "127.0.0.2", rcptDefault: "451 4.3.0 not now" }));
  const dir = own(tempDir());
  const toml = `[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n[delivery]\nretry = ["1s"]\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n`;
  let rt = (await startRuntime(testConfig(dir.path, toml))).rt;
  try {
    expect(await sendOverSmtp(rt, "someone@dest.test")).toMatch(/^250 /);
    await waitFor(() => statusOf(rt) === "deferred", 10_000, "the first attempt deferred");
  } finally {
    await rt.stop();
  }
  const bodies = `${rt.config.database.path}-bodies`;
  expect(readdirSync(bodies)).toEqual(["00000001.body"]);

  // a new process in all but name: the body is read from its file, the receiver now takes it
  mx.script.rcptDefault = undefined;
  rt = own((await startRuntime(testConfig(dir.path, toml))).rt);
  await waitFor(() => pending(rt) === 0, 15_000, "delivery after the restart");
  expect(statusOf(rt)).toBe("delivered");
  const configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = ${JSON.stringify(dir.path)}\nhostname = "outpost.test"\n`);
  const { id } = rt.store.sqlite.query("SELECT id FROM messages").get() as { id: string };
  const shown = runCli(dir.path, ["queue", "show", id, "--body", "--config", configFile]);
  expect(mx.messages.length).toBe(1);
  const received = mx.messages[0]!.raw;
  // the body as sent (intake rewrote only the header block), and as `queue show --body` prints it from the file
  const bodyOf = (m: Buffer) => m.subarray(m.indexOf("\r\n\r\n") + 4);
  expect(bodyOf(received).equals(bodyOf(BODY))).toBe(true);
  expect(shown.code).toBe(0);
  expect(shown.out).toBe(bodyOf(BODY).toString());
  expect(existsSync(`${bodies}/00000001.body`)).toBe(true);
}, 40_000);

test("serve exits 1 naming a body file that messages name but that is gone, and starts nothing", async () => {
  const dir = own(tempDir());
  const toml = `[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n[delivery]\nsandbox = true\n`;
  const rt = (await startRuntime(testConfig(dir.path, toml))).rt;
  try {
    expect(await sendOverSmtp(rt, "someone@dest.test")).toMatch(/^250 /);
  } finally {
    await rt.stop();
  }
  const file = `${rt.config.database.path}-bodies/00000001.body`;
  unlinkSync(file);
  const configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = ${JSON.stringify(dir.path)}\nhostname = "outpost.test"\n[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n`);
  const serve = runCli(dir.path, ["serve", "--config", configFile]);
  expect(serve.code).toBe(1);
  expect(serve.err).toContain(`the body file ${file} is missing, and messages in the database name it: their bodies are lost`);
  expect(serve.out).not.toContain("smtp_listening");
}, 30_000);
