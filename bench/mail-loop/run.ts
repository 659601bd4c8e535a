/**
 * bench/mail-loop — how far a deliberate mail loop goes, and how long it takes, with a given smtp.max_hops.
 *
 *   bun bench/mail-loop/run.ts [--max-hops 50]
 *
 * `outpost serve` runs as its own process on a temp data dir, with its SMTP listener on 127.0.0.1 trusted and a
 * static route `*` back to that listener (a loop on purpose: the one kind delivery does not refuse). swaks sends
 * one message; the script then reads the database (read-only) until nothing is left to send, and prints how many
 * times the message and its DSN went round, and the time from the first acceptance to the last settle.
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, waitFor } from "../../test/helpers/harness.ts";

const args = process.argv.slice(2);
const i = args.indexOf("--max-hops");
const maxHops = i >= 0 ? Number(args[i + 1]) : null;
const root = resolve(import.meta.dir, "../..");

const dir = mkdtempSync(join(tmpdir(), "outpost-loop-"));
const port = await freePort();
const config = join(dir, "outpost.toml");
writeFileSync(
  config,
  `data_dir = ${JSON.stringify(join(dir, "data"))}\nhostname = "loop.bench"\nlog_level = "warn"\n` +
    `[smtp]\nlisten = ["127.0.0.1:${port}"]\ntrusted_networks = ["127.0.0.0/8"]\n${maxHops === null ? "" : `max_hops = ${maxHops}\n`}` +
    `[http]\nlisten = "127.0.0.1:0"\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.1"\nport = ${port}\n`,
);
const serve = Bun.spawn(["bun", join(root, "src/main.ts"), "serve", "--config", config], { stdout: "ignore", stderr: "ignore" });
try {
  const dbPath = join(dir, "data", "outpost.db");
  await waitFor(async () => (await Bun.spawn(["swaks", "--server", `127.0.0.1:${port}`, "--quit-after", "EHLO", "--silent", "2"], { stdout: "ignore", stderr: "ignore" }).exited) === 0, 20_000, "serve to listen");
  const swaks = Bun.spawn(["swaks", "--server", `127.0.0.1:${port}`, "--from", "app@example.com", "--to", "someone@far.example", "--silent", "2"]);
  if ((await swaks.exited) !== 0) throw new Error("swaks could not send");
  const db = new Database(dbPath, { readonly: true });
  const pending = () => db.query<{ n: number }, []>("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get()!.n;
  await waitFor(() => pending() === 0, 600_000, "the loop to end");
  const rows = db.query<{ address: string; status: string; last_reply: string; created_at: number }, []>(
    "SELECT r.address, r.status, r.last_reply, m.created_at FROM messages m JOIN recipients r ON r.message_id = m.id ORDER BY m.created_at, m.rowid",
  ).all();
  const lastEvent = db.query<{ t: number }, []>("SELECT max(time) AS t FROM events").get()!.t;
  const chain = rows.filter((r) => r.address === "someone@far.example");
  const dsns = rows.filter((r) => r.address === "app@example.com");
  db.close();
  console.log(JSON.stringify({
    max_hops: maxHops ?? "default",
    message_copies: chain.length,
    last_reply: chain.at(-1)?.last_reply,
    dsn_copies: dsns.length,
    messages_total: rows.length,
    ms_first_accept_to_last_settle: lastEvent - rows[0]!.created_at,
  }, null, 1));
} finally {
  serve.kill();
  await serve.exited;
  rmSync(dir, { recursive: true, force: true });
}
