/**
 * bench/personalize/relay — the end-to-end rate of one outpost with tracking OFF and ON, in the same run,
 * interleaved: an API loop → outpost (`bun src/main.ts serve`, its own process) → smtp-sink.
 *
 *   bun bench/personalize/relay.ts [--messages 300] [--recipients 1,10] [--reps 3] [--clients 8]
 *
 * Every message is the ~50 KiB newsletter of test/fixtures/html/newsletter.html (its first 40 links tracked, the
 * rest data-notrack, as bench/personalize/pipeline.ts), sent with `html` + `text` to `--recipients` addresses at
 * distinct domains, all routed to the sink; a [[dkim]] RSA-2048 key signs in both modes. OFF: no tracking options
 * (the recipients of a message share one transaction and one signature). ON: clicktracking, openstracking and
 * unsubscribe (each recipient its own copy, transaction and signature). A run is `--messages` POSTs from
 * `--clients` concurrent loops, timed from the first POST until outpost has recorded every recipient delivered
 * (outpost_delivery_attempts_total on /metrics); the server's CPU time over the run gives CPU ms per recipient.
 * Needs smtp-sink (Debian package postfix); as root it runs smtp-sink as the postfix user.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { firstRunKey } from "../lib/serve.ts";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const messages = Number(opt("messages", "300"));
const shapes = opt("recipients", "1,10").split(",").map(Number);
const reps = Number(opt("reps", "3"));
const clients = Number(opt("clients", "8"));
const root = resolve(import.meta.dir, "../..");

for (const tool of ["smtp-sink"]) {
  if (!Bun.which(tool)) {
    console.error(`${tool} is not installed (apt-get install postfix)`);
    process.exit(2);
  }
}

const dir = mkdtempSync(join(tmpdir(), "outpost-bench-"));
const httpPort = 20000 + Math.floor(Math.random() * 20000);
const sinkPort = httpPort + 1;
const pem = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
writeFileSync(join(dir, "dkim.pem"), pem, { mode: 0o600 });
writeFileSync(
  join(dir, "outpost.toml"),
  `data_dir = ${JSON.stringify(join(dir, "data"))}\nhostname = "bench.test"\nlog_level = "warn"\n` +
    `[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:${httpPort}"\npublic_url = "https://track.example.com"\n` +
    `[delivery]\nper_destination_connections = 20\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.1"\nport = ${sinkPort}\n` +
    `[[dkim]]\ndomain = "example.com"\nselector = "bench"\nprivate_key_file = ${JSON.stringify(join(dir, "dkim.pem"))}\n`,
);

const sink = Bun.spawn(["smtp-sink", ...(process.getuid?.() === 0 ? ["-u", "postfix"] : []), `127.0.0.1:${sinkPort}`, "1000"], {
  stdout: "ignore", stderr: "inherit",
});
const server = Bun.spawn(["bun", join(root, "src/main.ts"), "serve", "--config", join(dir, "outpost.toml")], {
  cwd: dir, stdout: "ignore", stderr: "pipe",
});

function stop(): void {
  server.kill("SIGTERM");
  sink.kill();
}
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

/** user+system CPU seconds the server has used so far (all its threads) */
function serverCpu(): number {
  const fields = readFileSync(`/proc/${server.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const base = `http://127.0.0.1:${httpPort}`;
const key = await firstRunKey(server.stderr, { ms: 20_000, forward: true });
const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };

async function delivered(): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(/^outpost_delivery_attempts_total\{result="delivered"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

let n = 0;
const html = (() => {
  let links = 0;
  return readFileSync(join(root, "test/fixtures/html/newsletter.html"), "utf8")
    .replace(/<a (?![^>]*data-notrack)([^>]*href="\s*https?:)/gi, (all, rest: string) => (++links > 40 ? `<a data-notrack ${rest}` : all));
})();
const text = html.replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").slice(0, 4000);

async function run(tracking: boolean, recipients: number): Promise<{ perSecond: number; cpuMs: number }> {
  const total = messages * recipients;
  const before = await delivered();
  const cpu0 = serverCpu();
  const start = performance.now();
  let next = 0;
  const loop = async () => {
    while (next < messages) {
      next++;
      const m = n++;
      const res = await fetch(`${base}/v1/send`, {
        method: "POST", headers: auth,
        body: JSON.stringify({
          envelope: "news@example.com", from: "The Weekly Harbour <news@example.com>", subject: `Issue ${m}`, html, text,
          recipient: Array.from({ length: recipients }, (_, i) => `reader${m}@d${i}.example`),
          clicktracking: tracking, openstracking: tracking, unsubscribe: tracking,
        }),
      });
      if (res.status !== 202) throw new Error(`POST /v1/send: ${res.status} ${await res.text()}`);
    }
  };
  await Promise.all(Array.from({ length: clients }, loop));
  for (const until = Date.now() + 600_000; (await delivered()) - before < total; await Bun.sleep(50)) {
    if (Date.now() > until) throw new Error("not all delivered within 10 minutes");
  }
  const seconds = (performance.now() - start) / 1000;
  return { perSecond: total / seconds, cpuMs: ((serverCpu() - cpu0) * 1000) / total };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
try {
  await run(false, 1); // warm-up: JIT, first connections
  console.log(`bun ${Bun.version}; ${messages} messages per run, ${clients} API clients, ${reps} reps interleaved OFF/ON`);
  console.log("| recipients/message | tracking | recipients delivered/s (median [min–max]) | server CPU ms/recipient | runs |");
  console.log("|---|---|---|---|---|");
  for (const recipients of shapes) {
    const results: Record<"off" | "on", { perSecond: number; cpuMs: number }[]> = { off: [], on: [] };
    for (let r = 0; r < reps; r++) {
      results.off.push(await run(false, recipients));
      results.on.push(await run(true, recipients));
    }
    for (const mode of ["off", "on"] as const) {
      const rates = results[mode].map((x) => x.perSecond);
      console.log(
        `| ${recipients} | ${mode.toUpperCase()} | ${median(rates).toFixed(0)} [${Math.min(...rates).toFixed(0)}–${Math.max(...rates).toFixed(0)}] | ` +
          `${median(results[mode].map((x) => x.cpuMs)).toFixed(2)} | ${rates.map((x) => x.toFixed(0)).join(" / ")} |`,
      );
    }
  }
} finally {
  stop();
}
