/**
 * bench/bounce-parse — bounces parsed per second by bounce/parse.ts over the test corpus
 * (test/fixtures/bounces, 42 messages from 1 KB to 57 KB), one after another in one process.
 *
 *   bun bench/bounce-parse/run.ts [--seconds 10] [--rounds 3]
 *
 * Each round parses the whole corpus repeatedly for `seconds`, after one warm-up pass; prints messages/s per
 * round (per wall second, and per CPU second of this process), the median, and the slowest single messages (ms).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseReport } from "../../src/bounce/parse.ts";
import { measure, numberOption as opt } from "../lib/timing.ts";

const seconds = opt("seconds", 10);
const rounds = opt("rounds", 3);
const dir = resolve(import.meta.dir, "../../test/fixtures/bounces");
const corpus = readdirSync(dir).filter((f) => f.endsWith(".eml")).sort().map((f) => ({ name: f, raw: readFileSync(join(dir, f)) }));
const bytes = corpus.reduce((n, m) => n + m.raw.length, 0);

for (const m of corpus) await parseReport(m.raw); // warm-up: JIT, mailparser's lazy requires

const rates = await measure(async () => {
  for (const m of corpus) await parseReport(m.raw);
}, corpus.length, seconds, rounds);
rates.rounds.forEach((r, i) =>
  console.log(`round ${i + 1}: ${r.count} messages in ${seconds} s = ${r.wall.toFixed(0)} messages/s (${r.cpu.toFixed(0)}/CPU-s)`),
);

const per: { name: string; ms: number }[] = [];
for (const m of corpus) {
  const start = performance.now();
  for (let i = 0; i < 20; i++) await parseReport(m.raw);
  per.push({ name: m.name, ms: (performance.now() - start) / 20 });
}
per.sort((a, b) => b.ms - a.ms);
const median = rates.wall;
console.log(`corpus: ${corpus.length} messages, ${(bytes / 1024).toFixed(0)} KiB; bun ${Bun.version}`);
console.log(`median: ${median.toFixed(0)} messages/s (${((median * bytes) / corpus.length / 1048576).toFixed(1)} MiB/s; ${rates.cpu.toFixed(0)}/CPU-s)`);
console.log(`slowest: ${per.slice(0, 3).map((p) => `${p.name} ${p.ms.toFixed(2)} ms`).join(", ")}`);
