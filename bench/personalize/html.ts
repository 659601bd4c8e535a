/**
 * bench/personalize/html — personalised copies per second of a ~50 KiB HTML newsletter with 60 links
 * (test/fixtures/html), click links + open pixel per recipient (tracking/html.ts personalizeHtml), one process.
 *
 *   bun bench/personalize/html.ts [--seconds 5] [--rounds 3]
 *
 * Scenarios, each as the fixture's HTML part is encoded:
 *   per recipient — the same stored message for recipient after recipient (the MIME parse is done once per
 *                   message and remembered; what delivery does for a message with many recipients);
 *   per message   — a fresh copy of the message each time (the parse paid every time: one recipient each).
 * Rates are per second of this process's CPU time (one core, whatever else the machine runs) and of wall time.
 * Tracked URLs are made as the tracker makes them: an HMAC-SHA256 token per link and for the pixel.
 * Also: inlinizecss (juice), which runs once per message at intake.
 */
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { inlineCssInMessage } from "../../src/message/inline-css.ts";
import { personalizeHtml } from "../../src/tracking/html.ts";
import { measure, numberOption as opt, type Rates } from "../lib/timing.ts";

const seconds = opt("seconds", 5);
const rounds = opt("rounds", 3);
const dir = resolve(import.meta.dir, "../../test/fixtures/html");
const KEY = Buffer.alloc(32, 7);
const PREFIX = "https://out.example/t/c/";
const token = (s: string) => createHmac("sha256", KEY).update(s).digest("base64url");

const messages = [
  ["quoted-printable (related + PDF + message/rfc822)", "01-related-alternative.eml"],
  ["base64, one part", "03-base64-html.eml"],
  ["ISO-8859-1 quoted-printable", "02-latin1-qp.eml"],
].map(([label, file]) => ({ label: label!, raw: readFileSync(join(dir, file!)) }));

let recipient = 0;
async function personalize(message: Buffer): Promise<void> {
  const r = recipient++;
  const out = await personalizeHtml(message, {
    clickUrl: (url, i) => `${PREFIX}${token(`${r}.${i}.${url}`)}`,
    openUrl: `https://out.example/t/o/${token(`${r}.open`)}`,
    trackedPrefix: PREFIX,
  });
  if (!out.ok) throw new Error(out.reason);
}

/** Copies per second of wall time and per second of this process's CPU time (what one core gives, however busy). */
async function rate(step: () => Promise<void>): Promise<Rates> {
  for (let i = 0; i < 50; i++) await step(); // warm-up: JIT
  return measure(async () => {
    for (let i = 0; i < 20; i++) await step();
  }, 20, seconds, rounds);
}

const show = (r: Rates) => `${r.cpu.toFixed(0)}/s per CPU-second (${r.wall.toFixed(0)}/s wall)`;

console.log(`bun ${Bun.version}; ${rounds} rounds of ${seconds} s, median`);
for (const m of messages) {
  const warm = await rate(() => personalize(m.raw));
  const cold = await rate(() => personalize(Buffer.from(m.raw)));
  console.log(`${m.label} (${(m.raw.length / 1024).toFixed(0)} KiB)\n  per recipient: ${show(warm)}\n  per message:   ${show(cold)}`);
}
const css = await rate(async () => {
  const r = await inlineCssInMessage(Buffer.from(messages[1]!.raw));
  if (!r.ok) throw new Error(r.reason);
});
console.log(`inlinizecss (base64 newsletter, once per message at intake): ${show(css)}`);
