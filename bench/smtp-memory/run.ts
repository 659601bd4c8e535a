#!/usr/bin/env bun
/**
 * Peak memory of `outpost serve` while it receives large messages in parallel over SMTP.
 *
 *   bun bench/smtp-memory/run.ts                       # 20 clients × 20 MiB, CRLF line ends
 *   CLIENTS=20 MIB=20 LINE_ENDS=lf bun bench/smtp-memory/run.ts   # bare LF line ends (normalised by outpost)
 *   DELIVERY=sandbox bun bench/smtp-memory/run.ts      # delivery (sandbox) loads each message meanwhile, too
 *
 * Starts `serve` as a child (the clients in trusted_networks, loopback only). By default delivery cannot route
 * (its DNS server is a closed port: every recipient is deferred before its message is loaded), so what is
 * measured is intake alone; DELIVERY=sandbox lets delivery load and settle each message as it is queued.
 * Waits until the server is idle, then CLIENTS raw SMTP clients at once each send one message of MIB MiB (base64-like 76-character
 * lines). Samples /proc/PID/status every 20 ms; prints the server's resident memory before the run (VmRSS), its
 * peak (VmHWM, the kernel's high-water mark) and the peak per message in flight, as one JSON line. Every message
 * must be answered 250 and be in the queue. OUTPOST_BIN runs a built binary instead of src/main.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { Database } from "bun:sqlite";

const ROOT = join(import.meta.dir, "..", "..");
const CLIENTS = Number(process.env.CLIENTS ?? 20);
const MIB = Number(process.env.MIB ?? 20);
const LINE_ENDS = process.env.LINE_ENDS === "lf" ? "lf" : "crlf";
const HOST = "127.0.0.33";
const PORT = Number(process.env.PORT ?? 2633);
const SANDBOX = process.env.DELIVERY === "sandbox";

/** A message of `mib` MiB: a few headers, then 76-character lines (no line starts with a dot). */
function message(mib: number, eol: string): Buffer {
  const head = `From: bench@example.org${eol}To: sink@example.net${eol}Subject: memory bench${eol}${eol}`;
  const line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0" + eol;
  const lines = Math.ceil((mib * 1024 * 1024 - head.length) / line.length);
  return Buffer.from(head + line.repeat(lines), "latin1");
}

function status(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(text.match(new RegExp(`^${key}:\\s+(\\d+)`, "m"))?.[1] ?? 0);
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}

/** One SMTP session sending `body`; resolves to the final reply to DATA. */
function send(body: Buffer, i: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: HOST, port: PORT, localAddress: "127.0.0.34" });
    let buf = "";
    const steps = [
      () => s.write("EHLO bench.test\r\n"),
      () => s.write(`MAIL FROM:<bench${i}@example.org> SIZE=${body.length}\r\n`),
      () => s.write("RCPT TO:<sink@example.net>\r\n"),
      () => s.write("DATA\r\n"),
      () => (s.write(body), s.write("\r\n.\r\n")),
    ];
    let step = 0;
    s.setTimeout(300_000, () => s.destroy(new Error("timeout")));
    s.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (let m; (m = buf.match(/^(\d{3}) .*\r\n/m)); ) {
        const reply = buf.slice(0, m.index! + m[0].length);
        buf = buf.slice(reply.length);
        const code = m[1]!;
        if (step < steps.length && /^[23]/.test(code)) steps[step++]!();
        else {
          s.end("QUIT\r\n");
          return step === steps.length ? resolve(reply.trim()) : reject(new Error(`session ${i}: ${reply.trim()}`));
        }
      }
    });
    s.on("error", reject);
  });
}

async function portOpen(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port: PORT }, () => (s.destroy(), resolve(true)));
    s.on("error", () => resolve(false));
  });
}

const dir = mkdtempSync("/var/tmp/outpost-memory-bench-");
const config = join(dir, "outpost.toml");
writeFileSync(config, `hostname = "outpost.bench"
data_dir = "${dir}/data"

[smtp]
listen = ["${HOST}:${PORT}"]
trusted_networks = ["127.0.0.0/8"]
max_connections_per_ip = ${CLIENTS + 10}
max_message_size = "${MIB + 5}MB"

[http]
listen = "${HOST}:${PORT + 1}"

${SANDBOX ? "[delivery]\nsandbox = true" : `[dns]\nservers = ["${HOST}:9"]`}
`);
const bin = process.env.OUTPOST_BIN;
const argv = bin ? [bin, "serve", "--config", config] : [process.execPath, join(ROOT, "src/main.ts"), "serve", "--config", config];
const log = Bun.file(join(dir, "outpost.log"));
const proc = Bun.spawn(argv, { cwd: dir, stdout: log, stderr: log });
try {
  for (let i = 0; i < 150 && !(await portOpen()); i++) await Bun.sleep(100);
  if (!(await portOpen())) throw new Error(`outpost did not start: ${readFileSync(join(dir, "outpost.log"), "utf8")}`);
  await Bun.sleep(1000); // first-run chores (admin user, argon2) done
  const body = message(MIB, LINE_ENDS === "lf" ? "\n" : "\r\n");
  const before = status(proc.pid);
  let peakRss = before.rss;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, status(proc.pid).rss)), 20);
  const started = performance.now();
  const replies = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => send(body, i)));
  const seconds = (performance.now() - started) / 1000;
  clearInterval(timer);
  const after = status(proc.pid);
  const bad = replies.filter((r) => !r.startsWith("250 "));
  if (bad.length) throw new Error(`not accepted: ${bad.join(" | ")}`);
  const db = new Database(join(dir, "data", "outpost.db"), { readonly: true });
  const stored = db.query<{ n: number }, []>("SELECT count(*) AS n FROM messages").get()!.n;
  db.close();
  if (stored !== CLIENTS) throw new Error(`${stored} of ${CLIENTS} messages stored`);
  const mib = (kib: number) => Math.round(kib / 1024);
  console.log(JSON.stringify({
    clients: CLIENTS, message_mib: +(body.length / 1048576).toFixed(1), line_ends: LINE_ENDS, delivery: SANDBOX ? "sandbox" : "none",
    seconds: +seconds.toFixed(1),
    rss_before_mib: mib(before.rss), peak_rss_mib: mib(Math.max(peakRss, after.hwm)), vm_hwm_mib: mib(after.hwm),
    peak_per_message_mib: +((after.hwm - before.rss) / 1024 / CLIENTS).toFixed(1),
  }));
} finally {
  proc.kill("SIGTERM");
  const t = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  await proc.exited;
  clearTimeout(t);
  rmSync(dir, { recursive: true, force: true });
}
