/**
 * bench/bounce-ingest — RFC 3464 bounce reports processed per second at the bounce domain, over SMTP.
 *
 *   bun bench/bounce-ingest/run.ts [--reports 2000] [--clients 8]
 *
 * `outpost serve` runs as its own process on a temp data dir (delivery in sandbox). The script sends
 * `--reports` messages with bouncetracking through the API (100 recipients each) and waits until the sandbox has
 * marked them delivered. It then computes each recipient's VERP return path (the instance secret is in the
 * data dir) and sends one DSN to each over SMTP without AUTH, from `--clients` parallel connections, each sending
 * its share one transaction after another. The rate is reports / time from the first MAIL FROM to the last 250;
 * every 250 comes after the report's commit (fsync). At the end the database must hold one `bounced` event per
 * report.
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import { verpCodec } from "../../src/bounce/verp.ts";
import type { RecipientId } from "../../src/mail/ids.ts";
import { freePort, waitFor } from "../../test/helpers/harness.ts";

const args = process.argv.slice(2);
const opt = (name: string, d: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : d;
};
const REPORTS = opt("reports", 2000);
const CLIENTS = opt("clients", 8);
const BOUNCE_DOMAIN = "bounces.bench.test";
const root = resolve(import.meta.dir, "../..");

const dir = mkdtempSync(join(tmpdir(), "outpost-bounce-bench-"));
const [smtpPort, httpPort] = [await freePort(), await freePort()];
const config = join(dir, "outpost.toml");
writeFileSync(
  config,
  `data_dir = ${JSON.stringify(join(dir, "data"))}\nhostname = "outpost.bench"\nlog_level = "warn"\n` +
    `[smtp]\nlisten = ["127.0.0.1:${smtpPort}"]\n[http]\nlisten = "127.0.0.1:${httpPort}"\n` +
    `[delivery]\nsandbox = true\n[tracking]\nbounce_domain = "${BOUNCE_DOMAIN}"\n`,
);
const serve = Bun.spawn(["bun", join(root, "src/main.ts"), "serve", "--config", config], { stdout: "pipe", stderr: "pipe" });
/** what serve printed (its log lines and the first-run secrets), read as it comes so its pipes never fill */
let served = "";
for (const stream of [serve.stdout, serve.stderr]) {
  void (async () => {
    for await (const chunk of stream) served += new TextDecoder().decode(chunk);
  })();
}

try {
  const apiKey = await firstRunKey();
  const ids = await trackedRecipients(apiKey);
  const db = new Database(join(dir, "data", "outpost.db"), { readonly: true });
  const pending = () => db.query<{ n: number }, []>("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get()!.n;
  await waitFor(() => pending() === 0, 300_000, "the sandbox to deliver");

  const verp = verpCodec(Buffer.from(readFileSync(join(dir, "data", "secret"), "utf8").trim(), "hex"));
  const jobs = ids.map((r) => ({ to: verp.verpAddress(r.id, BOUNCE_DOMAIN), dsn: dsn(r.address) }));
  const started = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => sendShare(jobs.filter((_, i) => i % CLIENTS === c))));
  const seconds = (performance.now() - started) / 1000;
  const bounced = db.query<{ n: number }, []>("SELECT count(*) AS n FROM events WHERE type = 'bounced'").get()!.n;
  db.close();
  console.log(JSON.stringify({
    reports: jobs.length, clients: CLIENTS, seconds: Number(seconds.toFixed(2)),
    reports_per_second: Math.round(jobs.length / seconds), bounced_events: bounced,
  }));
  if (bounced !== jobs.length) throw new Error(`expected ${jobs.length} bounced events, found ${bounced}`);
} finally {
  serve.kill();
  await serve.exited;
  rmSync(dir, { recursive: true, force: true });
}

/** `serve` prints the first-run API key once it listens. */
async function firstRunKey(): Promise<string> {
  return (await waitFor(() => /^api key: (\S+)$/m.exec(served)?.[1], 30_000, "serve to print its API key"));
}

async function trackedRecipients(apiKey: string): Promise<{ id: RecipientId; address: string }[]> {
  const out: { id: RecipientId; address: string }[] = [];
  for (let first = 0; first < REPORTS; first += 100) {
    const to = Array.from({ length: Math.min(100, REPORTS - first) }, (_, i) => `user${first + i}@dest.bench`);
    const res = await fetch(`http://127.0.0.1:${httpPort}/v1/send`, {
      method: "POST",
      headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
      body: JSON.stringify({ envelope: "app@example.com", to, subject: "bench", text: "hello", bouncetracking: true }),
    });
    if (res.status !== 202) throw new Error(`send: ${res.status} ${await res.text()}`);
    out.push(...((await res.json()) as { recipients: { id: RecipientId; address: string }[] }).recipients);
  }
  return out;
}

/** One client: one connection, its reports one after another. */
async function sendShare(share: { to: string; dsn: string }[]): Promise<void> {
  const conn = new SMTPConnection({ host: "127.0.0.1", port: smtpPort, ignoreTLS: true, name: "mx.dest.bench" });
  await new Promise<void>((ok, fail) => {
    conn.once("error", fail);
    conn.connect(() => ok());
  });
  try {
    for (const job of share) {
      await new Promise<void>((ok, fail) =>
        conn.send({ from: "", to: [job.to] }, job.dsn, (err, info) => (err ? fail(err) : /^250 /.test(info.response) ? ok() : fail(new Error(info.response)))),
      );
    }
  } finally {
    conn.quit();
  }
}

function dsn(recipient: string): string {
  return [
    "From: MAILER-DAEMON@mx.dest.bench (Mail Delivery System)",
    "Subject: Undelivered Mail Returned to Sender",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="B"',
    "",
    "--B",
    "Content-Type: text/plain",
    "",
    "Your message could not be delivered.",
    "",
    "--B",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; mx.dest.bench",
    "",
    `Final-Recipient: rfc822; ${recipient}`,
    "Action: failed",
    "Status: 5.1.1",
    `Diagnostic-Code: smtp; 550 5.1.1 <${recipient}>: Recipient address rejected: User unknown`,
    "",
    "--B",
    "Content-Type: text/rfc822-headers",
    "",
    "From: app@example.com",
    `To: ${recipient}`,
    "Subject: bench",
    "",
    "--B--",
    "",
  ].join("\r\n");
}
