#!/usr/bin/env bun
/**
 * SMTP intake benchmark: Postfix's smtp-source against outpost and, in the same run, against a
 * private Postfix that accepts and queues without delivering (defer_transports = smtp). Both fsync
 * before answering 250 (Postfix: cleanup fsyncs the queue file; outpost: SQLite WAL, synchronous=FULL).
 *
 *   sudo bun bench/smtp-intake/run.ts            # the whole matrix, one rep
 *   REPS=3 N_SMALL=5000 N_LARGE=2000 SESSIONS="1 10 50" SIZES="2048 51200" bun bench/smtp-intake/run.ts
 *
 * For each cell (payload size × sessions) Postfix runs first, then outpost, each freshly started with
 * an empty queue. accept rate = messages / wall time of smtp-source (every message got its 250).
 * Memory = peak over the run, sampled every 100 ms, of the process tree: RSS sum and PSS sum.
 * Only loopback addresses are used (Postfix 127.0.0.1:2625, outpost 127.0.0.32:2626); every run is bounded by
 * a message count and a timeout. Needs root (Postfix), Debian's postfix package, bun.
 */
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { postfixUnavailable, privatePostfix, type PostfixInstance } from "../../test/smtp/private-postfix.ts";

const ROOT = join(import.meta.dir, "..", "..");
const env = (k: string, d: string) => process.env[k] ?? d;
const REPS = Number(env("REPS", "1"));
const N_SMALL = Number(env("N_SMALL", "3000"));
const N_LARGE = Number(env("N_LARGE", "2000"));
const SESSIONS = env("SESSIONS", "1 10 50").split(/\s+/).map(Number);
const SIZES = env("SIZES", "2048 51200").split(/\s+/).map(Number);
const PF_MODE = env("PF_MODE", "defer");
const PF_ADDR = "127.0.0.1:2625"; // Postfix binds only addresses configured on an interface (lo: 127.0.0.1)
const OP_HOST = "127.0.0.32";
const OP_PORT = 2626;
const OUT = env("OUT", join(import.meta.dir, "results", `run-${new Date().toISOString().replace(/[:.]/g, "")}.jsonl`));

interface Result {
  relay: "postfix" | "outpost";
  size: number;
  sessions: number;
  msgs: number;
  seconds: number;
  rate: number;
  peakRssMiB: number;
  peakPssMiB: number;
  /** CPU time of the server's process tree per message (less sensitive to a busy machine than the rate) */
  cpuMsPerMsg: number;
  stored: number;
}

// --- process-tree memory sampling ---

function children(): Map<number, number[]> {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(s.slice(s.lastIndexOf(")") + 2).split(" ")[1]);
      kids.set(ppid, [...(kids.get(ppid) ?? []), Number(d)]);
    } catch {
      /* process went away */
    }
  }
  return kids;
}

function treeMemKiB(root: number): { rss: number; pss: number } {
  const kids = children();
  let rss = 0;
  let pss = 0;
  for (const stack = [root]; stack.length > 0; ) {
    const p = stack.pop()!;
    stack.push(...(kids.get(p) ?? []));
    try {
      for (const line of readFileSync(`/proc/${p}/smaps_rollup`, "utf8").split("\n")) {
        if (line.startsWith("Rss:")) rss += Number(line.split(/\s+/)[1]);
        else if (line.startsWith("Pss:")) pss += Number(line.split(/\s+/)[1]);
      }
    } catch {
      /* gone */
    }
  }
  return { rss, pss };
}

const CLK_TCK = 100; // Linux USER_HZ

/** CPU seconds of a process tree: live processes' utime+stime, plus the root's reaped children. */
function treeCpuSeconds(root: number): number {
  const kids = children();
  let ticks = 0;
  for (const stack = [root]; stack.length > 0; ) {
    const p = stack.pop()!;
    stack.push(...(kids.get(p) ?? []));
    try {
      const s = readFileSync(`/proc/${p}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ").map(Number);
      ticks += f[11]! + f[12]! + (p === root ? f[13]! + f[14]! : 0);
    } catch {
      /* gone */
    }
  }
  return ticks / CLK_TCK;
}

function sampler(root: () => number | null) {
  let peak = { rss: 0, pss: 0 };
  const t = setInterval(() => {
    const pid = root();
    if (pid === null) return;
    const m = treeMemKiB(pid);
    peak = { rss: Math.max(peak.rss, m.rss), pss: Math.max(peak.pss, m.pss) };
  }, 100);
  return { stop: () => (clearInterval(t), peak) };
}

// --- load generator ---

async function smtpSource(target: string, sessions: number, msgs: number, size: number): Promise<number> {
  const argv = ["smtp-source", "-s", String(sessions), "-m", String(msgs), "-l", String(size), "-M", "client.bench",
    "-f", "sender@bench.test", "-t", "rcpt@example.com", target];
  const started = performance.now();
  const p = Bun.spawn(["timeout", "600", ...argv], { stdout: "ignore", stderr: "pipe" });
  const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`smtp-source exited ${code}: ${stderr}`);
  return seconds;
}

// --- the two servers ---

async function startReferencePostfix(): Promise<PostfixInstance> {
  const pf = privatePostfix({
    smtpd: PF_ADDR,
    main: [
      "myhostname = postfix.bench",
      `inet_interfaces = ${PF_ADDR.split(":")[0]}`,
      "mynetworks = 127.0.0.0/8",
      "smtpd_relay_restrictions = permit_mynetworks, reject",
      // accept and queue, never deliver: mail for the smtp transport stays deferred
      // (PF_MODE=discard instead lets the discard agent take it: accepted, queued, then dropped)
      "relayhost = [127.0.0.1]:9",
      ...(PF_MODE === "discard" ? ["default_transport = discard", "relay_transport = discard"] : ["defer_transports = smtp"]),
      "default_process_limit = 200",
      "smtpd_client_connection_count_limit = 0",
      "smtpd_client_connection_rate_limit = 0",
      "message_size_limit = 52428800",
    ],
  });
  await pf.start();
  await Bun.sleep(500);
  return pf;
}

/** Queue files by name (queue ids), so a file that qmgr moves between directories during the walk counts once. */
function countQueueFiles(queueDir: string): number {
  const ids = new Set<string>();
  const walk = (d: string) => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e);
      if (statSync(p, { throwIfNoEntry: false })?.isDirectory()) walk(p);
      else ids.add(e);
    }
  };
  for (const sub of ["incoming", "active", "deferred", "hold", "maildrop"]) walk(join(queueDir, sub));
  return ids.size;
}

interface OutpostProc {
  pid: number;
  dir: string;
  stop(): Promise<void>;
  stored(): number;
}

async function startOutpost(): Promise<OutpostProc> {
  const dir = mkdtempSync("/var/tmp/outpost-intake-bench-");
  const config = join(dir, "outpost.toml");
  writeFileSync(config, `hostname = "outpost.bench"
data_dir = "${dir}/data"

[smtp]
listen = ["${OP_HOST}:${OP_PORT}"]
trusted_networks = ["127.0.0.0/8"]
max_connections_per_ip = 200
max_message_size = "50MB"

[http]
listen = "${OP_HOST}:8626"

[delivery]
sandbox = true
`);
  const bin = process.env.OUTPOST_BIN;
  const argv = bin ? [bin, "serve", "--config", config] : [process.execPath, join(ROOT, "src/main.ts"), "serve", "--config", config];
  const logFile = Bun.file(join(dir, "outpost.log"));
  const proc = Bun.spawn(argv, { cwd: dir, stdout: logFile, stderr: logFile });
  for (let i = 0; i < 100; i++) {
    if (await portOpen(OP_HOST, OP_PORT)) break;
    await Bun.sleep(100);
  }
  if (!(await portOpen(OP_HOST, OP_PORT))) throw new Error(`outpost did not start: ${readFileSync(join(dir, "outpost.log"), "utf8")}`);
  await Bun.sleep(500);
  return {
    pid: proc.pid,
    dir,
    async stop() {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      await proc.exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
    stored() {
      const db = new Database(join(dir, "data", "outpost.db"), { readonly: true });
      try {
        return db.query<{ n: number }, []>("SELECT count(*) AS n FROM messages").get()?.n ?? -1;
      } finally {
        db.close();
      }
    },
  };
}

async function portOpen(host: string, port: number): Promise<boolean> {
  try {
    const s = await Bun.connect({ hostname: host, port, socket: { data() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

// --- the run ---

async function cell(relay: "postfix" | "outpost", size: number, sessions: number, msgs: number): Promise<Result> {
  if (relay === "postfix") {
    const pf = await startReferencePostfix();
    try {
      const mem = sampler(pf.masterPid);
      const cpu0 = treeCpuSeconds(pf.masterPid()!);
      const seconds = await smtpSource(PF_ADDR, sessions, msgs, size);
      const cpu = treeCpuSeconds(pf.masterPid()!) - cpu0;
      const peak = mem.stop();
      return result(relay, size, sessions, msgs, seconds, peak, cpu, countQueueFiles(pf.queueDir));
    } finally {
      await pf.stop();
      pf.cleanup();
    }
  }
  const op = await startOutpost();
  try {
    const mem = sampler(() => op.pid);
    const cpu0 = treeCpuSeconds(op.pid);
    const seconds = await smtpSource(`${OP_HOST}:${OP_PORT}`, sessions, msgs, size);
    const cpu = treeCpuSeconds(op.pid) - cpu0;
    const peak = mem.stop();
    return result(relay, size, sessions, msgs, seconds, peak, cpu, op.stored());
  } finally {
    await op.stop();
  }
}

function result(relay: Result["relay"], size: number, sessions: number, msgs: number, seconds: number, peak: { rss: number; pss: number }, cpu: number, stored: number): Result {
  return {
    relay, size, sessions, msgs, seconds: round(seconds, 2), rate: round(msgs / seconds, 0),
    peakRssMiB: round(peak.rss / 1024, 1), peakPssMiB: round(peak.pss / 1024, 1), cpuMsPerMsg: round((cpu * 1000) / msgs, 2), stored,
  };
}

const loadAvg = () => Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
/** The median (for an even count, the mean of the middle two). */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : round((s[m - 1]! + s[m]!) / 2, 1);
}

async function main(): Promise<void> {
  const why = postfixUnavailable();
  if (why) throw new Error(why);
  mkdirSync(join(OUT, ".."), { recursive: true });
  const all: Result[] = [];
  for (const size of SIZES) {
    for (const sessions of SESSIONS) {
      const msgs = size > 4096 ? N_LARGE : N_SMALL;
      for (let rep = 0; rep < REPS; rep++) {
        for (const relay of ["postfix", "outpost"] as const) {
          const load1 = loadAvg();
          const r = await cell(relay, size, sessions, msgs);
          if (r.stored !== msgs && !(relay === "postfix" && PF_MODE === "discard")) console.warn(`warning: ${relay} stored ${r.stored} of ${msgs}`);
          // the machine is shared: keep its load next to each figure
          appendFileSync(OUT, JSON.stringify({ time: new Date().toISOString(), rep, pfMode: PF_MODE, loadBefore: load1, loadAfter: loadAvg(), ...r }) + "\n");
          console.error(JSON.stringify(r));
          all.push(r);
        }
      }
    }
  }
  console.log(`\n| payload | sessions | Postfix msgs/s | outpost msgs/s | ratio outpost/Postfix | Postfix CPU ms/msg | outpost CPU ms/msg | Postfix peak RSS (PSS) MiB | outpost peak RSS (PSS) MiB |`);
  console.log(`|---|---|---|---|---|---|---|---|---|`);
  for (const size of SIZES) {
    for (const sessions of SESSIONS) {
      const pick = (relay: string) => all.filter((r) => r.relay === relay && r.size === size && r.sessions === sessions);
      const pf = pick("postfix");
      const op = pick("outpost");
      const pfRate = median(pf.map((r) => r.rate));
      const opRate = median(op.map((r) => r.rate));
      const label = size >= 1024 ? `${size / 1024} KiB` : `${size} B`;
      const m = (rs: Result[], k: keyof Result) => median(rs.map((r) => r[k] as number));
      console.log(`| ${label} | ${sessions} | ${pfRate} | ${opRate} | ${round(opRate / pfRate, 2)} | ${m(pf, "cpuMsPerMsg")} | ${m(op, "cpuMsPerMsg")} | ${m(pf, "peakRssMiB")} (${m(pf, "peakPssMiB")}) | ${m(op, "peakRssMiB")} (${m(op, "peakPssMiB")}) |`);
    }
  }
  console.log(`\nraw results: ${OUT}`);
}

await main();
