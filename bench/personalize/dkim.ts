/**
 * bench/personalize/dkim — DKIM signatures per second on one core, for a 50 KiB message (multipart/alternative,
 * quoted-printable text and HTML, as a newsletter looks), with an RSA-2048 key, an Ed25519 key, and both.
 *
 *   bun bench/personalize/dkim.ts [--seconds 5] [--rounds 3] [--kib 50]
 *
 * Rates are per CPU second of this process (one core's worth when the core is ours alone) and per wall second.
 * Also times the parts of one signature (the relaxed body hash, the private-key operation) and mailauth's own
 * `dkimSign` on the same message, to show where the time goes. Every signed message is a fresh Buffer with one
 * byte changed per recipient, as personalisation makes them, so no cache can help.
 */
import { generateKeyPairSync, sign as cryptoSign } from "node:crypto";
import { dkimSign } from "mailauth";
import { dkimBody } from "mailauth/lib/dkim/body";
import { parsePrivateKey, type DkimKey } from "../../src/dkim/keys.ts";
import { DkimSigner } from "../../src/dkim/sign.ts";
import { measure, numberOption as opt } from "../lib/timing.ts";

const seconds = opt("seconds", 5);
const rounds = opt("rounds", 3);
const kib = opt("kib", 50);

/** Quoted-printable-looking lines of 76 characters (soft breaks), text then HTML, until the message is `kib` KiB. */
function newsletter(size: number): Buffer {
  const head =
    "From: News <news@example.com>\r\nTo: reader@example.org\r\nSubject: This week at Example\r\n" +
    "Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n" +
    "List-Unsubscribe: <https://example.com/t/u/token>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" +
    'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n';
  const textLine = "Our team has been busy this week; here is what changed and what comes next.=\r\n";
  const htmlLine = '<p style=3D"margin:0 0 12px;font-family:Arial">Read <a href=3D"https://ex.com/=\r\n';
  const parts: string[] = [head, "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"];
  let length = parts.join("").length;
  const half = size / 3;
  while (length < half) (parts.push(textLine), (length += textLine.length));
  parts.push("\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
  while (length < size - 12) (parts.push(htmlLine), (length += htmlLine.length));
  parts.push("\r\n--b1--\r\n");
  return Buffer.from(parts.join(""));
}

function key(algorithm: "rsa" | "ed25519", selector: string): DkimKey {
  const pair = algorithm === "rsa" ? generateKeyPairSync("rsa", { modulusLength: 2048 }) : generateKeyPairSync("ed25519");
  return { domain: "example.com", selector, ...parsePrivateKey(pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString()) };
}

const message = newsletter(kib * 1024);
const rsa = key("rsa", "rsa1");
const ed = key("ed25519", "ed1");
const variants = Array.from({ length: 64 }, (_, i) => {
  const m = Buffer.from(message);
  m[m.length - 20] = 0x41 + (i % 26); // a per-recipient difference in the body
  return m;
});

/**
 * Runs `fn` for `seconds`, `rounds` times, after a warm-up; prints the median rate per CPU second (what one
 * core gives when it is ours alone: on a machine shared with other work, wall-clock rates only measure the
 * share we got) and per wall-clock second.
 */
async function rate(label: string, fn: (m: Buffer) => unknown): Promise<number> {
  for (let i = 0; i < 50; i++) await fn(variants[i % variants.length]!);
  let n = 0;
  const r = await measure(async () => {
    for (let i = 0; i < 16; i++) await fn(variants[(n + i) % variants.length]!);
    n += 16;
  }, 16, seconds, rounds);
  console.log(
    `${label.padEnd(46)} ${r.cpu.toFixed(0).padStart(6)}/CPU-s (${(1000 / r.cpu).toFixed(3)} ms)  ${r.wall.toFixed(0).padStart(6)}/s wall` +
      `  (rounds ${r.rounds.map((x) => x.cpu.toFixed(0)).join(" / ")})`,
  );
  return r.cpu;
}

console.log(`message: ${message.length} bytes (${(message.length / 1024).toFixed(1)} KiB); bun ${Bun.version}; ${seconds} s × ${rounds} rounds`);
const signers = { rsa: new DkimSigner([rsa]), ed: new DkimSigner([ed]), both: new DkimSigner([rsa, ed]) };
await rate("DkimSigner.sign, RSA-2048", (m) => signers.rsa.sign(m, ""));
await rate("DkimSigner.sign, Ed25519", (m) => signers.ed.sign(m, ""));
await rate("DkimSigner.sign, RSA-2048 + Ed25519", (m) => signers.both.sign(m, ""));
console.log("parts:");
await rate("  relaxed body hash (mailauth)", (m) => {
  const h = dkimBody("relaxed", "sha256", false);
  h.update(m);
  return h.digest("base64");
});
const data = Buffer.alloc(700, 0x61); // about the size of the canonicalized header block
await rate("  RSA-2048 signature of the header block", () => cryptoSign("sha256", data, rsa.privateKey));
await rate("  Ed25519 signature of its SHA-256", () => cryptoSign(null, data.subarray(0, 32), ed.privateKey));
console.log("for comparison:");
const rsaPem = rsa.privateKey.export({ type: "pkcs8", format: "pem" });
const edPem = ed.privateKey.export({ type: "pkcs8", format: "pem" });
/** mailauth's public signer; it reads the PEM again on every call, as its API takes the key as text. */
const mailauthSign = (selector: string, privateKey: string | Buffer) => async (m: Buffer) => {
  const { signatures, errors } = await dkimSign(m, { signingDomain: "example.com", selector, privateKey, signatureData: [{ signingDomain: "example.com", selector, privateKey }] });
  if (!signatures || errors.length > 0) throw new Error(`mailauth did not sign: ${JSON.stringify(errors)}`);
};
await rate("  mailauth dkimSign, RSA-2048 (no oversigning)", mailauthSign("rsa1", rsaPem));
await rate("  mailauth dkimSign, Ed25519 (no oversigning)", mailauthSign("ed1", edPem));
