/**
 * bench/bounce-parse — bounces parsed per second by bounce/parse.ts over the test corpus
 * (test/fixtures/bounces, 42 messages from 1 KB to 57 KB), one after another in one process.
 *
 *   bun bench/bounce-parse/run.ts [--seconds 10] [--rounds 3]
 *
 * Each round parses the whole corpus repeatedly for `seconds`, after one warm-up pass; prints messages/s per
 * round, the median, the slowest single message (ms), and the median per format family.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseReport } from "../../src/bounce/parse.ts";

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : dflt;
};
const seconds = opt("seconds", 10);
const rounds = opt("rounds", 3);
const dir = resolve(import.meta.dir, "../../test/fixtures/bounces");
const corpus = readdirSync(dir).filter((f) => f.endsWith(".eml")).sort().map((f) => ({ name: f, raw: readFileSync(join(dir, f)) }));
const bytes = corpus.reduce((n, m) => n + m.raw.length, 0);

for (const m of corpus) await parseReport(m.raw); // warm-up: JIT, mailparser's lazy requires

const rates: number[] = [];
for (let round = 1; round <= rounds; round++) {
  let count = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    for (const m of corpus) await parseReport(m.raw);
    count += corpus.length;
  }
  const rate = count / ((performance.now() - start) / 1000);
  rates.push(rate);
  console.log(`round ${round}: ${count} messages in ${seconds} s = ${rate.toFixed(0)} messages/s`);
}

const per: { name: string; ms: number }[] = [];
for (const m of corpus) {
  const start = performance.now();
  for (let i = 0; i < 20; i++) await parseReport(m.raw);
  per.push({ name: m.name, ms: (performance.now() - start) / 20 });
}
per.sort((a, b) => b.ms - a.ms);
const median = [...rates].sort((a, b) => a - b)[Math.floor(rates.length / 2)]!;
console.log(`corpus: ${corpus.length} messages, ${(bytes / 1024).toFixed(0)} KiB; bun ${Bun.version}`);
console.log(`median: ${median.toFixed(0)} messages/s (${((median * bytes) / corpus.length / 1048576).toFixed(1)} MiB/s)`);
console.log(`slowest: ${per.slice(0, 3).map((p) => `${p.name} ${p.ms.toFixed(2)} ms`).join(", ")}`);
