/** @module test/bounce/fixture — an outpost with a bounce domain delivering to a fake MX, and a plain SMTP sender for reports. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Runtime } from "../../src/runtime/start.ts";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { secretFrom, startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";
import { RawSmtp } from "../smtp/fixture.ts";

export const BOUNCE_DOMAIN = "bounces.outpost.test";

export interface BounceFixture {
  rt: Runtime;
  mx: FakeMx;
  dir: string;
  /** an outpost.toml in `dir` naming the same data dir, for the CLI */
  configFile: string;
  apiKey: string;
  smtpPort: number;
  /** POST /v1/send as the first-run admin */
  send(fields: Record<string, unknown>): Promise<{ status: number; body: SendAnswer }>;
  get(path: string): Promise<unknown>;
  pending(): number;
  stop(): Promise<void>;
}

export interface SendAnswer {
  id: string;
  recipients: { address: string; id: string; status: string }[];
  error?: { code: string; field?: string; message: string };
}

export async function startBounceFixture(extraTracking = ""): Promise<BounceFixture> {
  const mx = await startFakeMx({ host: "127.0.0.2" });
  const d = tempDir();
  const toml = `
[http]
listen = "127.0.0.1:0"
[tracking]
bounce_domain = "${BOUNCE_DOMAIN}"
${extraTracking}
[[delivery.route]]
domain = "*"
host = "127.0.0.2"
port = ${mx.port}
`;
  const { rt, firstRun } = await startRuntime(testConfig(d.path, toml));
  const configFile = join(d.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = ${JSON.stringify(d.path)}\nhostname = "outpost.test"\n${toml}`);
  const apiKey = secretFrom(firstRun, "api key");
  const base = `http://127.0.0.1:${rt.http!.port}`;
  const headers = { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" };
  return {
    rt, mx, dir: d.path, configFile, apiKey,
    smtpPort: rt.smtp!.addresses()[0]!.port,
    async send(fields) {
      const res = await fetch(`${base}/v1/send`, { method: "POST", headers, body: JSON.stringify(fields) });
      return { status: res.status, body: (await res.json()) as SendAnswer };
    },
    async get(path) {
      return (await fetch(`${base}${path}`, { headers })).json();
    },
    pending: () =>
      rt.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get()!.n,
    async stop() {
      await rt.stop();
      await mx.stop();
      d.cleanup();
    },
  };
}

export interface SmtpReplies {
  mail: string;
  rcpt: string[];
  /** the reply at the end of DATA, or null when no RCPT was accepted */
  data: string | null;
}

/** One SMTP transaction from `localAddress` without AUTH, as a remote MTA sends a report. */
export async function sendOverSmtp(port: number, from: string, to: string[], message: string, localAddress = "127.0.0.3"): Promise<SmtpReplies> {
  const c = await RawSmtp.connect(port, { localAddress });
  try {
    await c.reply();
    c.write("EHLO mx.remote.test\r\n");
    await c.reply();
    c.write(`MAIL FROM:<${from}>\r\n`);
    const mail = await c.reply();
    const rcpt: string[] = [];
    for (const t of to) {
      c.write(`RCPT TO:<${t}>\r\n`);
      rcpt.push(await c.reply());
    }
    if (!rcpt.some((r) => r.startsWith("250"))) return { mail, rcpt, data: null };
    c.write("DATA\r\n");
    await c.reply();
    const body = message.replace(/\r?\n/g, "\r\n").replace(/^\./gm, "..");
    c.write(body.endsWith("\r\n") ? body : `${body}\r\n`);
    c.write(".\r\n");
    const data = await c.reply(10_000);
    c.write("QUIT\r\n");
    return { mail, rcpt, data };
  } finally {
    c.close();
  }
}

/** An RFC 3464 report as Postfix writes it: `recipient` failed with `status` at mx.dest.test. */
export function dsnFor(
  recipient: string, returnPath: string, status = "5.1.1", text = "User unknown in virtual mailbox table", messageId?: string,
): string {
  const code = status.startsWith("5") ? 550 : 450;
  return [
    "From: MAILER-DAEMON@mx.dest.test (Mail Delivery System)",
    `To: ${returnPath}`,
    "Subject: Undelivered Mail Returned to Sender",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"',
    "",
    "--BOUNDARY",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "I'm sorry to have to inform you that your message could not be delivered.",
    "",
    "--BOUNDARY",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; mx.dest.test",
    "",
    `Final-Recipient: rfc822; ${recipient}`,
    `Original-Recipient: rfc822;${recipient}`,
    "Action: failed",
    `Status: ${status}`,
    "Remote-MTA: dns; mailstore.dest.test",
    `Diagnostic-Code: smtp; ${code} ${status} <${recipient}>: ${text}`,
    "",
    "--BOUNDARY",
    "Content-Type: text/rfc822-headers",
    "",
    "From: app@example.com",
    `To: ${recipient}`,
    "Subject: hello",
    ...(messageId ? [`Message-ID: ${messageId}`] : []),
    "",
    "--BOUNDARY--",
    "",
  ].join("\r\n");
}

export function waitDelivered(f: BounceFixture, ms = 10_000): Promise<boolean> {
  return waitFor(() => f.pending() === 0, ms, "the queue to empty");
}

/** An RFC 5965 (ARF) feedback report about `recipient`, returning the headers of the message `messageId`. */
export function arfFor(recipient: string, messageId: string): string {
  return [
    "From: fbl@isp.test",
    "Subject: FW: spam report",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"',
    "",
    "--ARF",
    "Content-Type: text/plain",
    "",
    "This is an email abuse report.",
    "",
    "--ARF",
    "Content-Type: message/feedback-report",
    "",
    "Feedback-Type: abuse",
    "User-Agent: isp-fbl/1.0",
    "Version: 1",
    `Original-Rcpt-To: <${recipient}>`,
    "",
    "--ARF",
    "Content-Type: text/rfc822-headers",
    "",
    "From: app@example.com",
    `To: ${recipient}`,
    "Subject: hello",
    `Message-ID: ${messageId}`,
    "",
    "--ARF--",
    "",
  ].join("\r\n");
}

export const localOf = (address: string) => address.slice(0, address.lastIndexOf("@"));
