/**
 * bench/api-send — messages/s accepted by POST /v1/send (2 KB MIME, one recipient) with 1, 16 and 64
 * concurrent clients, p50/p99 latency and the server's peak RSS. outpost runs as its own process
 * (`bun src/main.ts serve`) on a temp data dir with delivery.sandbox = true; the load comes from wrk.
 *
 *   apt-get install wrk   # once
 *   bun bench/api-send/run.ts [--duration 10] [--clients 1,16,64] [--scenarios intake,delivery] [--out bench/api-send/table.md]
 *                             [--endpoints v1,v1-fields,postmark,mailgun,mailgun-mime] [--rounds 1]
 *   (WRK_THREADS sets wrk's threads, default 1; OUTPOST_BIN and BENCH_BUN_FLAGS below)
 *
 * Two scenarios on one server:
 *   delivery  — the recipient is delivered by the sandbox delivery loop in the same process (the whole pipeline);
 *   intake    — the recipient is on the suppression list, so the same intake path runs (message, recipient row,
 *               event, one durable commit per batch) but delivery has nothing to do: the API + intake cost alone.
 *
 * Endpoints (default v1), each sending the same message, one recipient:
 *   v1           POST /v1/send, JSON, the 2 KB MIME message as `body`
 *   v1-fields    POST /v1/send, JSON, from/to/subject/text (2 KB of text): outpost composes the MIME
 *   postmark     POST /email, JSON, From/To/Subject/TextBody: the same fields through the Postmark adapter
 *   mailgun      POST /v3/bench.test/messages, multipart from/to/subject/text: the same through the Mailgun adapter
 *   mailgun-mime POST /v3/bench.test/messages.mime, multipart to + the MIME message as a file part
 *   v1-form      POST /v1/send, multipart from/to/subject/text: mailgun's request on outpost's own route
 *   v1-mime-form POST /v1/send, multipart recipient + the MIME message as a file part: mailgun-mime's likewise
 * With several endpoints, each client count runs them in turn, `--rounds` times (interleaved, so the machine's
 * other load falls on all of them alike); the summary gives each endpoint's median and its cost against the
 * native request of the same form: postmark against v1-fields, mailgun against v1-form, mailgun-mime against
 * v1-mime-form (what is left is the adapter's own cost, not that of its body format).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { firstRunKey } from "../lib/serve.ts";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const duration = Number(opt("duration", "10"));
const clients = opt("clients", "1,16,64").split(",").map(Number);
const scenarios = opt("scenarios", "intake,delivery").split(",");
const endpoints = opt("endpoints", "v1").split(",");
const rounds = Number(opt("rounds", "1"));
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

/** The 2 KB message's text, for the endpoints that send fields rather than MIME. */
function text2k(): string {
  const line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
  return line.repeat(Math.floor(1900 / line.length));
}

const BOUNDARY = "----outpost-bench-boundary";

function multipart(parts: [string, string, string?][]): string {
  const body = parts
    .map(([name, value, filename]) =>
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"${filename ? `; filename="${filename}"\r\nContent-Type: application/octet-stream` : ""}\r\n\r\n${value}\r\n`,
    )
    .join("");
  return `${body}--${BOUNDARY}--\r\n`;
}

interface Endpoint {
  path: string;
  contentType: string;
  /** the request's key header: name and value */
  auth: (key: string) => [string, string];
  body: (rcpt: string) => string;
  /** the status of an accepted message; the intake scenario's suppressed recipient may differ */
  status: (scenario: string) => number;
}

const bearer = (key: string): [string, string] => ["Authorization", `Bearer ${key}`];
const ENDPOINTS: Record<string, Endpoint> = {
  v1: {
    path: "/v1/send", contentType: "application/json", auth: bearer, status: () => 202,
    body: (rcpt) => JSON.stringify({ envelope: "bench@example.com", recipient: rcpt, body: message2k() }),
  },
  "v1-fields": {
    path: "/v1/send", contentType: "application/json", auth: bearer, status: () => 202,
    body: (rcpt) => JSON.stringify({ from: "Bench <bench@example.com>", to: rcpt, subject: "benchmark message", text: text2k() }),
  },
  postmark: {
    path: "/email", contentType: "application/json", auth: (key) => ["X-Postmark-Server-Token", key],
    // a message whose every recipient is suppressed is Postmark's 406, answered 422 after it is stored
    status: (scenario) => (scenario === "intake" ? 422 : 200),
    body: (rcpt) => JSON.stringify({ From: "Bench <bench@example.com>", To: rcpt, Subject: "benchmark message", TextBody: text2k() }),
  },
  mailgun: {
    path: "/v3/bench.test/messages", contentType: `multipart/form-data; boundary=${BOUNDARY}`,
    auth: (key) => ["Authorization", `Basic ${btoa(`api:${key}`)}`], status: () => 200,
    body: (rcpt) => multipart([["from", "Bench <bench@example.com>"], ["to", rcpt], ["subject", "benchmark message"], ["text", text2k()]]),
  },
  "v1-form": {
    path: "/v1/send", contentType: `multipart/form-data; boundary=${BOUNDARY}`, auth: bearer, status: () => 202,
    body: (rcpt) => multipart([["from", "Bench <bench@example.com>"], ["to", rcpt], ["subject", "benchmark message"], ["text", text2k()]]),
  },
  "v1-mime-form": {
    path: "/v1/send", contentType: `multipart/form-data; boundary=${BOUNDARY}`, auth: bearer, status: () => 202,
    body: (rcpt) => multipart([["recipient", rcpt], ["body", message2k(), "message.eml"]]),
  },
  "mailgun-mime": {
    path: "/v3/bench.test/messages.mime", contentType: `multipart/form-data; boundary=${BOUNDARY}`,
    auth: (key) => ["Authorization", `Basic ${btoa(`api:${key}`)}`], status: () => 200,
    body: (rcpt) => multipart([["to", rcpt], ["message", message2k(), "message.eml"]]),
  },
};
for (const e of endpoints) {
  if (!ENDPOINTS[e]) {
    console.error(`unknown endpoint ${e} (${Object.keys(ENDPOINTS).join(", ")})`);
    process.exit(2);
  }
}

interface Run {
  scenario: string;
  endpoint: string;
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

function parseWrk(text: string, scenario: string, endpoint: string, c: number, rssKb: number, load: string): Run {
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  const str = (re: RegExp) => re.exec(text)?.[1] ?? "?";
  // post.lua counts the answers other than the endpoint's accepted status (a Postmark 422 can be one)
  const errors = num(/unexpected statuses: (\d+)/) || 0;
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const sockets = socketErrors ? socketErrors.slice(1).map(Number).reduce((a, b) => a + b, 0) : 0;
  return {
    scenario,
    endpoint,
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
  const key = await firstRunKey(server.stderr, { ms: 15_000, forward: false });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if ((await fetch(`${base}/healthz`).catch(() => null))?.ok) break;
    await Bun.sleep(100);
  }
  const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  await fetch(`${base}/v1/suppressions`, { method: "POST", headers: auth, body: JSON.stringify({ address: "suppressed@example.org" }) });
  for (const [scenario, rcpt] of [["intake", "suppressed@example.org"], ["delivery", "rcpt@example.org"]] as const) {
    if (!scenarios.includes(scenario)) continue;
    for (const name of endpoints) {
      const e = ENDPOINTS[name]!;
      writeFileSync(join(dir, `${scenario}-${name}.body`), e.body(rcpt));
      const [header, value] = e.auth(key);
      const probe = await fetch(`${base}${e.path}`, {
        method: "POST", headers: { "content-type": e.contentType, [header]: value }, body: readFileSync(join(dir, `${scenario}-${name}.body`)),
      });
      if (probe.status !== e.status(scenario)) throw new Error(`probe of ${name} answered ${probe.status}: ${await probe.text()}`);
    }
    for (const c of clients) {
      for (let round = 0; round < rounds; round++) {
        for (const name of endpoints) {
          const e = ENDPOINTS[name]!;
          const [header, value] = e.auth(key);
          const load = loadAverage();
          const cpu0 = cpuSeconds(server.pid);
          const wrk = Bun.spawnSync(
            ["wrk", "-t", process.env.WRK_THREADS ?? "1", "-c", String(c), "-d", `${duration}s`, "--latency", "-s", join(import.meta.dir, "post.lua"), `${base}${e.path}`],
            {
              env: {
                ...process.env, BODY_FILE: join(dir, `${scenario}-${name}.body`), CONTENT_TYPE: e.contentType, AUTH_HEADER: header, AUTH_VALUE: value,
                EXPECT_STATUS: String(e.status(scenario)),
              },
            },
          );
          const cpu = cpuSeconds(server.pid) - cpu0;
          const run = parseWrk(wrk.stdout.toString(), scenario, name, c, peakRssKb(server.pid), load);
          run.cpuUsPerMsg = run.requests > 0 ? Math.round((cpu * 1e6) / run.requests) : 0;
          results.push(run);
          console.log(
            `${scenario} ${name} ${c} clients: ${run.rps.toFixed(0)} msgs/s, p50 ${run.p50}, p99 ${run.p99}, ${run.requests} requests, ` +
              `${run.errors} errors, peak RSS ${run.rssMb} MB, server CPU ${run.cpuUsPerMsg} µs/msg, load ${run.load}`,
          );
        }
      }
    }
  }
  const depth = (await (await fetch(`${base}/healthz`)).json()) as { queue_depth: number };
  console.log(`queue depth after the runs: ${depth.queue_depth}`);
} finally {
  server.kill("SIGTERM");
  await server.exited;
  rmSync(dir, { recursive: true, force: true });
}

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** The native request of the same body format an adapter is compared with. */
const COMPARED_WITH: Record<string, string> = { postmark: "v1-fields", mailgun: "v1-form", "mailgun-mime": "v1-mime-form" };

/** Each endpoint's median over the rounds, and its cost against the endpoint it is compared with. */
function summary(): string[] {
  if (endpoints.length < 2) return [];
  const lines = [
    "| scenario | clients | endpoint | msgs/s (median) | server CPU µs/msg (median) | vs | msgs/s | CPU/msg |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  const med = (scenario: string, c: number, e: string) => {
    const runs = results.filter((r) => r.scenario === scenario && r.clients === c && r.endpoint === e);
    return runs.length ? { rps: median(runs.map((r) => r.rps)), cpu: median(runs.map((r) => r.cpuUsPerMsg)) } : null;
  };
  const pct = (a: number, b: number) => `${a >= b ? "+" : ""}${(((a - b) / b) * 100).toFixed(1)} %`;
  for (const scenario of scenarios) {
    for (const c of clients) {
      for (const e of endpoints) {
        const m = med(scenario, c, e);
        if (!m) continue;
        const base = COMPARED_WITH[e];
        const b = base ? med(scenario, c, base) : null;
        lines.push(`| ${scenario} | ${c} | ${e} | ${m.rps.toFixed(0)} | ${m.cpu} | ${b ? base : ""} | ${b ? pct(m.rps, b.rps) : ""} | ${b ? pct(m.cpu, b.cpu) : ""} |`);
      }
    }
  }
  return lines;
}

const table = summary();
if (table.length) console.log(table.join("\n"));

if (out) {
  const rows = results.map(
    (r) =>
      `| ${r.scenario} | ${r.endpoint} | ${r.clients} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.requests} | ${r.errors} | ${r.rssMb} | ${r.cpuUsPerMsg} | ${r.load} |`,
  );
  const runs = [
    "| scenario | endpoint | clients | msgs/s | p50 | p99 | requests | errors | peak RSS (MB) | server CPU µs/msg | load avg |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows,
  ].join("\n");
  writeFileSync(out, runs + "\n" + (table.length ? "\n" + table.join("\n") + "\n" : ""));
  console.log(`table written to ${out}`);
}
