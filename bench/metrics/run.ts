/**
 * What a prom-client counter costs on the hot path (counted per message and per recipient): increments per CPU
 * second for a plain number, a counter without labels, one with a label, and a histogram observation, on one
 * registry as the runtime makes it. `bun bench/metrics/run.ts [N]` (default 5,000,000 per case).
 */
import { Metrics } from "../../src/observe/metrics.ts";

const N = Number(process.argv[2] ?? 5_000_000);
const metrics = new Metrics();
const plain = { n: 0 };
const bare = metrics.counter({ name: "bench_bare_total", help: "no labels" });
const labelled = metrics.counter({ name: "bench_labelled_total", help: "one label", labelNames: ["result"] });
const latency = metrics.histogram({ name: "bench_latency_seconds", help: "16 buckets", buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400, 432000] });
const results = ["delivered", "deferred", "throttled", "bounced", "expired"] as const;

function cpuSeconds(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
}

const cases: Array<[string, () => void]> = [
  ["number++ (the old counters)", () => { for (let i = 0; i < N; i++) plain.n++; }],
  ["Counter.inc()", () => { for (let i = 0; i < N; i++) bare.inc(); }],
  ['Counter.inc({ result })', () => { for (let i = 0; i < N; i++) labelled.inc({ result: results[i % 5]! }); }],
  ["Histogram.observe(s)", () => { for (let i = 0; i < N; i++) latency.observe((i % 1000) / 10); }],
];
// one warm-up pass each, so the JIT has compiled them before the timed pass
for (const [, fn] of cases) cpuSeconds(fn);
console.log(`| case | per CPU second | ns each |\n| --- | ---: | ---: |`);
for (const [name, fn] of cases) {
  const s = cpuSeconds(fn);
  console.log(`| ${name} | ${Math.round(N / s).toLocaleString("en")} | ${((s / N) * 1e9).toFixed(1)} |`);
}
console.log(`\nrender() of these 4 families: ${(cpuSeconds(() => void metrics.render()) * 1000).toFixed(2)} ms`);
