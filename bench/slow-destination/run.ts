/**
 * bench/slow-destination — do retries get their turn at a slow destination while new mail keeps it busy?
 *
 *   bun bench/slow-destination/run.ts [--messages 3000] [--sessions 20] [--limit-s 900] [--root DIR]
 *
 * `outpost serve` (its own process, temp data dir, `retry = ["5s"]`, `per_destination_connections = 2`) relays
 * everything through a static route to a receiver in this process (smtp-server on 127.0.0.1) that answers
 * `451 4.3.0` to 20 % of RCPTs and takes 0–400 ms before answering each DATA. Postfix's smtp-source submits the
 * messages at once (`--sessions` parallel sessions, one distinct recipient each). `--root` runs the `serve` of
 * another checkout (to measure a version before a change); this script stays the same.
 *
 * Every second it reads the database (read-only): a retry is *overdue* from its `deferred` event's
 * `next_attempt_at` until the next attempt's event for that recipient (or until now, while it has none). It prints
 * the oldest overdue retry and how many were overdue at each report, and at the end the largest overdue seen in
 * the whole run, the time until nothing was left to send, and deliveries per recipient at the receiver
 * (duplicates are a bug).
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SMTPServer } from "smtp-server";
import { waitFor } from "../../test/helpers/harness.ts";

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : fallback;
};
const MESSAGES = Number(opt("messages", "3000"));
const SESSIONS = Number(opt("sessions", "20"));
const LIMIT_MS = Number(opt("limit-s", "900")) * 1000;
const ROOT = resolve(opt("root", join(import.meta.dir, "../..")));
const LEASE_MS = 20_000; // the scheduler's default lease, the bound a due retry must meet

// ---- the slow receiver -------------------------------------------------------------------------------------
const deliveries = new Map<string, number>();
let rcpt451 = 0;
const receiver = new SMTPServer({
  authOptional: true,
  disabledCommands: ["AUTH", "STARTTLS"],
  hideSTARTTLS: true,
  logger: false,
  disableReverseLookup: true,
  onRcptTo(_address, _session, cb) {
    if (Math.random() < 0.2) {
      rcpt451++;
      return cb(Object.assign(new Error("4.3.0 Requested action aborted: local error in processing"), { responseCode: 451 }));
    }
    cb();
  },
  onData(stream, session, cb) {
    stream.resume();
    stream.on("end", () =>
      setTimeout(() => {
        for (const r of session.envelope.rcptTo) deliveries.set(r.address, (deliveries.get(r.address) ?? 0) + 1);
        cb();
      }, Math.random() * 400),
    );
  },
});
receiver.on("error", () => {});
await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", () => r()));
const mxPort = (receiver.server.address() as { port: number }).port;

// ---- outpost -----------------------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), "outpost-slow-dest-"));
const config = join(dir, "outpost.toml");
writeFileSync(
  config,
  `data_dir = ${JSON.stringify(join(dir, "data"))}\nhostname = "outpost.bench"\n` +
    `[smtp]\nlisten = ["127.0.0.1:0"]\ntrusted_networks = ["127.0.0.0/8"]\nmax_connections_per_ip = 1000\n` +
    `[http]\nlisten = "127.0.0.1:0"\n` +
    `[delivery]\nretry = ["5s"]\nper_destination_connections = 2\n` +
    `[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.1"\nport = ${mxPort}\n`,
);
// its log (stdout) gives the SMTP port it bound: `smtp_listening`
const serve = Bun.spawn(["bun", join(ROOT, "src/main.ts"), "serve", "--config", config], {
  stdout: "pipe", stderr: "ignore",
});
let out = "";
void (async () => {
  for await (const chunk of serve.stdout) if (!out.includes('"smtp_listening"')) out += new TextDecoder().decode(chunk);
})();

try {
  const dbPath = join(dir, "data", "outpost.db");
  const smtpPort = await waitFor(listeningPort, 30_000, "serve to listen");
  const t0 = Date.now();
  const source = Bun.spawn([
    "/usr/sbin/smtp-source", "-s", String(SESSIONS), "-m", String(MESSAGES), "-N", "-f", "app@example.com",
    "-t", "rcpt@dest.test", `127.0.0.1:${smtpPort}`,
  ], { stdout: "ignore", stderr: "pipe" });
  if ((await source.exited) !== 0) throw new Error(`smtp-source failed: ${await new Response(source.stderr).text()}`);
  const submitted = Date.now() - t0;
  console.log(`submitted ${MESSAGES} messages in ${(submitted / 1000).toFixed(1)} s`);

  const db = new Database(dbPath, { readonly: true });
  let worst = { overdueMs: 0, at: 0, recipient: "" };
  let drainedAt = 0;
  let lastReport = 0;
  while (Date.now() - t0 < LIMIT_MS) {
    const now = Date.now();
    const o = overdue(db, now);
    if (o.maxMs > worst.overdueMs) worst = { overdueMs: o.maxMs, at: now - t0, recipient: o.recipient };
    const pending = db.query<{ n: number }, []>("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get()!.n;
    if (now - lastReport >= 10_000 || pending === 0) {
      lastReport = now;
      console.log(
        `t=${((now - t0) / 1000).toFixed(0)}s pending=${pending} waiting_retries_overdue=${o.waitingOverdue} ` +
          `oldest_overdue_now=${(o.waitingMaxMs / 1000).toFixed(1)}s worst_so_far=${(worst.overdueMs / 1000).toFixed(1)}s`,
      );
    }
    if (pending === 0) {
      drainedAt = now - t0;
      break;
    }
    await Bun.sleep(1_000);
  }
  db.close();
  const counts = [...deliveries.values()];
  console.log(JSON.stringify({
    messages: MESSAGES,
    root: ROOT,
    rcpt_451: rcpt451,
    drained_s: drainedAt ? drainedAt / 1000 : null,
    oldest_overdue_retry_s: worst.overdueMs / 1000,
    oldest_overdue_within_one_lease: worst.overdueMs <= LEASE_MS,
    seen_at_s: worst.at / 1000,
    delivered_recipients: counts.length,
    duplicates: counts.reduce((n, c) => n + c - 1, 0),
  }, null, 1));
} finally {
  serve.kill();
  await serve.exited;
  receiver.close();
  rmSync(dir, { recursive: true, force: true });
}

/** The SMTP port serve logged (`smtp_listening`), once it has. */
function listeningPort(): number | undefined {
  const line = out.split("\n").find((l) => l.includes('"event":"smtp_listening"'));
  return line ? (JSON.parse(line) as { port: number }).port : undefined;
}

/**
 * Overdue retries: for every `deferred` event, from its next_attempt_at to the recipient's next event (or now).
 * maxMs over all of them; waiting*: those still without a next attempt.
 */
function overdue(db: Database, now: number) {
  const rows = db.query<{ recipient_id: string; recipient: string; type: string; time: number; details: string }, []>(
    `SELECT recipient_id, recipient, type, time, details FROM events
     WHERE type IN ('deferred','delivered','bounced') ORDER BY recipient_id, id`,
  ).all();
  let maxMs = 0;
  let recipient = "";
  let waitingOverdue = 0;
  let waitingMaxMs = 0;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (r.type !== "deferred") continue;
    const due = Date.parse((JSON.parse(r.details) as { next_attempt_at: string }).next_attempt_at);
    const next = rows[i + 1]?.recipient_id === r.recipient_id ? rows[i + 1]!.time : null;
    const late = (next ?? now) - due;
    if (late > maxMs) {
      maxMs = late;
      recipient = r.recipient;
    }
    if (next === null && late > 0) {
      waitingOverdue++;
      waitingMaxMs = Math.max(waitingMaxMs, late);
    }
  }
  return { maxMs, recipient, waitingOverdue, waitingMaxMs };
}
