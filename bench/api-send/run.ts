/**
 * bench/api-send — messages/s accepted by POST /v1/send (2 KB MIME, one recipient) with 1, 16 and 64
 * concurrent clients, p50/p99 latency and the server's peak RSS. outpost runs as its own process
 * (`bun src/main.ts serve`) on a temp data dir with delivery.sandbox = true; the load comes from wrk.
 *
 *   apt-get install wrk   # once
 *   bun bench/api-send/run.ts [--duration 10] [--clients 1,16,64] [--scenarios intake,delivery] [--out bench/api-send/table.md]
 *   (WRK_THREADS sets wrk's threads, default 1; OUTPOST_BIN and BENCH_BUN_FLAGS below)
 *
 * Two scenarios on one server:
 *   delivery  — the recipient is delivered by the sandbox delivery loop in the same process (the whole pipeline);
 *   intake    — the recipient is on the suppression list, so the same intake path runs (message, recipient row,
 *               event, one durable commit per batch) but delivery has nothing to do: the API + intake cost alone.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const duration = Number(opt("duration", "10"));
const clients = opt("clients", "1,16,64").split(",").map(Number);
const scenarios = opt("scenarios", "intake,delivery").split(",");
const out = opt("out", "");
const root = resolve(import.meta.dir, "../..");

if (!Bun.which("wrk")) {
  console.error("wrk is not installed: apt-get install wrk");
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), "outpost-bench-"));
const port = 20000 + Math.floor(Math.random() * 20000);
writeFileSync(
  join(dir, "outpost.toml"),
  `data_dir = ${JSON.stringify(join(dir, "data"))}\nhostname = "bench.test"\nlog_level = "warn"\n` +
    `[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:${port}"\n[delivery]\nsandbox = true\n`,
);

// BENCH_BUN_FLAGS="--cpu-prof-md --cpu-prof-dir=/tmp/prof" profiles the server
const bunFlags = (process.env.BENCH_BUN_FLAGS ?? "").split(" ").filter(Boolean);
// OUTPOST_BIN=dist/outpost measures the compiled binary operators run
const command = process.env.OUTPOST_BIN
  ? [resolve(process.env.OUTPOST_BIN), "serve"]
  : ["bun", ...bunFlags, join(root, "src/main.ts"), "serve"];
const server = Bun.spawn([...command, "--config", join(dir, "outpost.toml")], {
  cwd: dir,
  stdout: "ignore",
  stderr: "pipe",
});

/** serve prints its first-run secrets to stderr (stdout is JSON log lines only); that pipe is drained after. */
async function firstRunKey(): Promise<string> {
  const reader = server.stderr.getReader();
  let text = "";
  const until = Date.now() + 15_000;
  while (Date.now() < until) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
    const m = /^api key: (\S+)$/m.exec(text);
    if (m) {
      // keep draining so the server never blocks on a full pipe
      void (async () => {
        while (!(await reader.read()).done);
      })();
      return m[1]!;
    }
  }
  throw new Error(`no api key printed by outpost serve:\n${text}`);
}

function peakRssKb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

/** user+system CPU seconds the process has used so far (all its threads) */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function loadAverage(): string {
  return readFileSync("/proc/loadavg", "utf8").split(" ")[0]!;
}

function message2k(): string {
  const head =
    "From: Bench <bench@example.com>\r\nTo: <rcpt@example.org>\r\nSubject: benchmark message\r\n" +
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
  const line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
  let body = "";
  while (head.length + body.length + line.length <= 2048) body += line;
  return head + body;
}

interface Run {
  scenario: string;
  clients: number;
  rps: number;
  p50: string;
  p99: string;
  requests: number;
  errors: number;
  rssMb: number;
  /** server CPU per accepted message: robust against other load on the machine, unlike msgs/s */
  cpuUsPerMsg: number;
  load: string;
}

function parseWrk(text: string, scenario: string, c: number, rssKb: number, load: string): Run {
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  const str = (re: RegExp) => re.exec(text)?.[1] ?? "?";
  const errors = num(/Non-2xx or 3xx responses: (\d+)/) || 0;
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const sockets = socketErrors ? socketErrors.slice(1).map(Number).reduce((a, b) => a + b, 0) : 0;
  return {
    scenario,
    clients: c,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50: str(/^\s+50%\s+(\S+)/m),
    p99: str(/^\s+99%\s+(\S+)/m),
    requests: num(/(\d+) requests in/),
    errors: errors + sockets,
    rssMb: Math.round(rssKb / 1024),
    cpuUsPerMsg: 0, // filled in by the caller, which measured the CPU around the run
    load,
  };
}

const results: Run[] = [];
try {
  const key = await firstRunKey();
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if ((await fetch(`${base}/healthz`).catch(() => null))?.ok) break;
    await Bun.sleep(100);
  }
  const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  await fetch(`${base}/v1/suppressions`, { method: "POST", headers: auth, body: JSON.stringify({ address: "suppressed@example.org" }) });
  for (const [scenario, rcpt] of [["intake", "suppressed@example.org"], ["delivery", "rcpt@example.org"]] as const) {
    if (!scenarios.includes(scenario)) continue;
    const bodyFile = join(dir, `${scenario}.json`);
    writeFileSync(bodyFile, JSON.stringify({ envelope: "bench@example.com", recipient: rcpt, body: message2k() }));
    const probe = await fetch(`${base}/v1/send`, { method: "POST", headers: auth, body: readFileSync(bodyFile) });
    if (probe.status !== 202) throw new Error(`probe send answered ${probe.status}: ${await probe.text()}`);
    for (const c of clients) {
      const load = loadAverage();
      const cpu0 = cpuSeconds(server.pid);
      const wrk = Bun.spawnSync(
        ["wrk", "-t", process.env.WRK_THREADS ?? "1", "-c", String(c), "-d", `${duration}s`, "--latency", "-s", join(import.meta.dir, "post.lua"), `${base}/v1/send`],
        { env: { ...process.env, OUTPOST_KEY: key, BODY_FILE: bodyFile } },
      );
      const cpu = cpuSeconds(server.pid) - cpu0;
      const run = parseWrk(wrk.stdout.toString(), scenario, c, peakRssKb(server.pid), load);
      run.cpuUsPerMsg = run.requests > 0 ? Math.round((cpu * 1e6) / run.requests) : 0;
      results.push(run);
      console.log(
        `${scenario} ${c} clients: ${run.rps.toFixed(0)} msgs/s, p50 ${run.p50}, p99 ${run.p99}, ${run.requests} requests, ` +
          `${run.errors} errors, peak RSS ${run.rssMb} MB, server CPU ${run.cpuUsPerMsg} µs/msg, load ${run.load}`,
      );
    }
  }
  const depth = (await (await fetch(`${base}/healthz`)).json()) as { queue_depth: number };
  console.log(`queue depth after the runs: ${depth.queue_depth}`);
} finally {
  server.kill("SIGTERM");
  await server.exited;
  rmSync(dir, { recursive: true, force: true });
}

if (out) {
  const rows = results.map(
    (r) => `| ${r.scenario} | ${r.clients} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.requests} | ${r.errors} | ${r.rssMb} | ${r.cpuUsPerMsg} | ${r.load} |`,
  );
  const table = [
    "| scenario | clients | msgs/s | p50 | p99 | requests | errors | peak RSS (MB) | server CPU µs/msg | load avg |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows,
  ].join("\n");
  writeFileSync(out, table + "\n");
  console.log(`table written to ${out}`);
}
