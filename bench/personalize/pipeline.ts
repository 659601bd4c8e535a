/**
 * bench/personalize/pipeline — personalised copies per second through delivery's whole per-recipient stage
 * (src/delivery/personalize.ts Personalizer.outbound: click links + open pixel, List-Unsubscribe, DKIM last) for a
 * ~50 KiB HTML newsletter with 40 tracked links (test/fixtures/html/newsletter.html, the links past the 40th
 * marked data-notrack), composed as the API composes it (multipart/alternative, quoted-printable).
 *
 *   taskset -c 1 bun bench/personalize/pipeline.ts [--seconds 5] [--rounds 3] [--per-job 1]
 *
 * One message, stored once, recipient after recipient (`--per-job` recipients per call: a job is one message's
 * recipients at one destination), as delivery runs it for a newsletter: the MIME parse and HTML pass are done once
 * and remembered, each copy costs its tokens, the holes, List-Unsubscribe and its signature. Rates are per second
 * of this process's CPU time (one core's worth, whatever else the machine runs) and of wall time.
 */
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { verpCodec } from "../../src/bounce/verp.ts";
import { parsePrivateKey, type DkimKey } from "../../src/dkim/keys.ts";
import { DkimSigner } from "../../src/dkim/sign.ts";
import { Personalizer } from "../../src/delivery/personalize.ts";
import { newMessageId, newRecipientId, type UserId } from "../../src/mail/ids.ts";
import { composeMessage } from "../../src/message/compose.ts";
import { silentLogger } from "../../src/observe/log.ts";
import type { StoredMessage } from "../../src/queue/claim.ts";
import type { MessageOptions } from "../../src/queue/enqueue.ts";
import { TrackingTokens } from "../../src/tracking/token.ts";
import { measure, numberOption as opt } from "../lib/timing.ts";

const seconds = opt("seconds", 5);
const rounds = opt("rounds", 3);
const perJob = opt("per-job", 1);
/** `--only N`: run scenario N (1-based) alone, e.g. under `bun --cpu-prof` */
const only = opt("only", 0);
const LINKS = 40;

/** The fixture newsletter with its http(s) links past the 40th left untracked (data-notrack). */
function newsletterHtml(): string {
  let n = 0;
  const html = readFileSync(join(import.meta.dir, "../../test/fixtures/html/newsletter.html"), "utf8");
  return html.replace(/<a (?![^>]*data-notrack)([^>]*href="\s*https?:)/gi, (all, rest: string) => (++n > LINKS ? `<a data-notrack ${rest}` : all));
}

function key(algorithm: "rsa" | "ed25519", selector: string): DkimKey {
  const pair = algorithm === "rsa" ? generateKeyPairSync("rsa", { modulusLength: 2048 }) : generateKeyPairSync("ed25519");
  return { domain: "example.com", selector, ...parsePrivateKey(pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString()) };
}

const html = newsletterHtml();
const body = await composeMessage({
  from: { name: "The Weekly Harbour", address: "news@example.com" }, to: [{ address: "reader@example.org" }], cc: [], bcc: [],
  subject: "The Weekly Harbour - Issue 142", html, text: html.replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").slice(0, 4000), headers: [], attachments: [],
}, "bench.example");

const OPTIONS: MessageOptions = { inlineCss: false, trackClicks: true, trackOpens: true, trackBounces: false, unsubscribe: true };
const message: StoredMessage = { id: newMessageId(), userId: 1 as UserId, envelopeFrom: "news@example.com", body, createdAt: 0, options: OPTIONS };
const secret = Buffer.alloc(32, 3);
const tokens = new TrackingTokens(secret);
const rsa = key("rsa", "rsa1");
const ed = key("ed25519", "ed1");

function personalizer(keys: DkimKey[]): Personalizer {
  return new Personalizer({
    verp: verpCodec(secret), bounceDomain: "", tokens, publicUrl: "https://track.example.com", signer: new DkimSigner(keys),
  }, silentLogger);
}

/** Median copies per CPU second and per wall second over `rounds` rounds of `seconds`, after a warm-up. */
let scenario = 0;
async function rate(label: string, p: Personalizer, options: MessageOptions = OPTIONS): Promise<void> {
  if (only && ++scenario !== only) return;
  const m = { ...message, options };
  const job = () => Array.from({ length: perJob }, () => ({ id: newRecipientId(), address: "reader@example.org" }));
  const first = await p.outbound(m, job());
  const tracked = (first[0]!.body.toString("latin1").match(/track\.example\.com\/t\/c\//g) ?? []).length;
  for (let i = 0; i < 30; i++) await p.outbound(m, job());
  const r = await measure(async () => {
    for (let i = 0; i < 8; i++) await p.outbound(m, job());
  }, 8 * perJob, seconds, rounds);
  console.log(
    `${label.padEnd(44)} ${r.cpu.toFixed(0).padStart(6)}/CPU-s (${(1000 / r.cpu).toFixed(3)} ms)  ${r.wall.toFixed(0).padStart(6)}/s wall` +
      `  [${tracked} tracked links; rounds ${r.rounds.map((x) => x.cpu.toFixed(0)).join(" / ")}]`,
  );
}

console.log(`message: ${body.length} bytes (${(body.length / 1024).toFixed(1)} KiB); bun ${Bun.version}; ${perJob} recipient(s) per job; ${seconds} s × ${rounds} rounds`);
await rate("click + open + List-Unsubscribe + RSA-2048", personalizer([rsa]));
await rate("click + open + List-Unsubscribe + Ed25519", personalizer([ed]));
await rate("click + open + List-Unsubscribe, no DKIM", personalizer([]));
await rate("click + open, no DKIM", personalizer([]), { ...OPTIONS, unsubscribe: false });
await rate("untracked, RSA-2048 (one shared signature)", personalizer([rsa]), { ...OPTIONS, trackClicks: false, trackOpens: false, unsubscribe: false });
