/**
 * bench/disk-full — does a full disk cost delay or duplicates? (needs root: it mounts a small tmpfs)
 *
 *   sudo bun bench/disk-full/run.ts [--messages 2000] [--full-s 60] [--size-mb 64] [--root DIR]
 *
 * `outpost serve` (its own process) keeps its data dir on a tmpfs of `--size-mb` and relays everything through a
 * static route to a receiver in this process (smtp-server on 127.0.0.1, 20–100 ms per DATA) that counts deliveries
 * per recipient. Postfix's smtp-source submits the messages; once 100 have arrived the script fills the tmpfs to
 * the last byte, keeps it full for `--full-s` seconds (several 20 s leases), frees it, and waits until every
 * recipient has arrived and nothing has arrived for 30 s. Then SIGTERM. It prints deliveries, duplicates (a
 * recipient received more than once), serve's exit code and how often it logged each store-failure event.
 * `--root` runs the `serve` of another checkout (a version before a change); this script stays the same.
 */
import { execFileSync } from "node:child_process";
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
const MESSAGES = Number(opt("messages", "2000"));
const FULL_MS = Number(opt("full-s", "60")) * 1000;
const SIZE_MB = Number(opt("size-mb", "64"));
const ROOT = resolve(opt("root", join(import.meta.dir, "../..")));

// ---- the receiver ------------------------------------------------------------------------------------------
const deliveries = new Map<string, number>();
let lastArrival = Date.now();
const receiver = new SMTPServer({
  authOptional: true, disabledCommands: ["AUTH", "STARTTLS"], hideSTARTTLS: true, logger: false, disableReverseLookup: true,
  onData(stream, session, cb) {
    stream.resume();
    stream.on("end", () =>
      setTimeout(() => {
        for (const r of session.envelope.rcptTo) deliveries.set(r.address, (deliveries.get(r.address) ?? 0) + 1);
        lastArrival = Date.now();
        cb();
      }, 20 + Math.random() * 80),
    );
  },
});
receiver.on("error", () => {});
await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", () => r()));
const mxPort = (receiver.server.address() as { port: number }).port;

// ---- outpost on a small tmpfs --------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), "outpost-disk-full-"));
const mnt = join(dir, "mnt");
execFileSync("mkdir", ["-p", mnt]);
execFileSync("mount", ["-t", "tmpfs", "-o", `size=${SIZE_MB}m`, "tmpfs", mnt]);
const config = join(dir, "outpost.toml");
writeFileSync(
  config,
  `data_dir = ${JSON.stringify(join(mnt, "data"))}\nhostname = "outpost.bench"\n` +
    `[smtp]\nlisten = ["127.0.0.1:0"]\ntrusted_networks = ["127.0.0.0/8"]\nmax_connections_per_ip = 1000\n` +
    `[http]\nlisten = "127.0.0.1:0"\n[delivery]\nper_destination_connections = 2\n` +
    `[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.1"\nport = ${mxPort}\n`,
);
const serve = Bun.spawn(["bun", join(ROOT, "src/main.ts"), "serve", "--config", config], { stdout: "pipe", stderr: "ignore" });
const events = new Map<string, number>();
let log = "";
void (async () => {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const chunk of serve.stdout) {
    const lines = (rest + decoder.decode(chunk)).split("\n");
    rest = lines.pop()!;
    for (const l of lines) {
      if (!log.includes('"smtp_listening"')) log += `${l}\n`;
      const event = /"event":"([^"]+)"/.exec(l)?.[1];
      if (event) events.set(event, (events.get(event) ?? 0) + 1);
    }
  }
})();

try {
  const smtpPort = await waitFor(() => {
    const line = log.split("\n").find((l) => l.includes('"event":"smtp_listening"'));
    return line ? (JSON.parse(line) as { port: number }).port : undefined;
  }, 30_000, "serve to listen");
  const source = Bun.spawn([
    "/usr/sbin/smtp-source", "-s", "10", "-m", String(MESSAGES), "-N", "-f", "app@example.com", "-t", "rcpt@dest.test",
    `127.0.0.1:${smtpPort}`,
  ], { stdout: "ignore", stderr: "pipe" });
  if ((await source.exited) !== 0) throw new Error(`smtp-source failed: ${await new Response(source.stderr).text()}`);
  await waitFor(() => deliveries.size >= 100, 60_000, "100 deliveries");
  // fill the disk: big blocks, then small ones for the last bytes (dd stops at ENOSPC)
  for (const [bs, name] of [["1M", "filler1"], ["4k", "filler2"], ["512", "filler3"]] as const) {
    Bun.spawnSync(["dd", "if=/dev/zero", `of=${join(mnt, name)}`, `bs=${bs}`], { stdout: "ignore", stderr: "ignore" });
  }
  const fullAt = deliveries.size;
  console.log(`disk full after ${fullAt} deliveries; kept full for ${FULL_MS / 1000} s`);
  await Bun.sleep(FULL_MS);
  for (const name of ["filler1", "filler2", "filler3"]) rmSync(join(mnt, name), { force: true });
  console.log(`disk freed; ${deliveries.size} recipients delivered so far`);
  await waitFor(() => deliveries.size >= MESSAGES && Date.now() - lastArrival > 30_000, 900_000, "every recipient, then 30 s of quiet");
  serve.kill("SIGTERM");
  const code = await serve.exited;
  const counts = [...deliveries.values()];
  console.log(JSON.stringify({
    root: ROOT,
    messages: MESSAGES,
    delivered_recipients: counts.length,
    deliveries: counts.reduce((a, b) => a + b, 0),
    duplicates: counts.reduce((n, c) => n + c - 1, 0),
    serve_exit: code,
    logged: Object.fromEntries([...events].filter(([e]) => /fail|unrecorded|not_recorded|timeout/.test(e))),
  }, null, 1));
} finally {
  if (serve.exitCode === null) {
    serve.kill("SIGKILL");
    await serve.exited;
  }
  receiver.close();
  execFileSync("umount", [mnt]);
  rmSync(dir, { recursive: true, force: true });
}
