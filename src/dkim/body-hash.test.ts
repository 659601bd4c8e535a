import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { dkimBody } from "mailauth/lib/dkim/body";
import { relaxedBodyHash } from "./body-hash.ts";

/** mailauth's relaxed body hash, the reference */
function reference(body: Buffer): string {
  const h = dkimBody("relaxed", "sha256", false);
  h.update(body);
  return h.digest("base64");
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
}

/** a seeded generator, so a failure names a body that can be made again */
function randomBody(seed: number): Buffer {
  const alphabet = [" ", " ", "\t", "\r\n", "\r\n", "\n", "\r", "a", "b", "=", "\u00e9"];
  let x = seed;
  const parts: string[] = [];
  for (let i = 0; i < 60; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    parts.push(alphabet[x % alphabet.length]!);
  }
  return Buffer.from(parts.join(""));
}

describe("relaxed body hash", () => {
  test("is mailauth's hash for blanks, line ends and empty lines in every position", () => {
    const cases = [
      "", "\r\n", "\r\n\r\n", "a", "a\r\n", "a\r\n\r\n\r\n", " a  b \t\r\n", "\r\n\r\na", "a \r\n \r\n", "\t\r\n",
      "a\nb\n", "a\rb\r\n", "a\r", "  leading\r\n", "trailing  ", "x\r\n \r\n\t\r\n", "a\r\n\r\n b\r\n\r\n",
    ];
    for (const c of cases) expect([c, relaxedBodyHash(Buffer.from(c))]).toEqual([c, reference(Buffer.from(c))]);
  });

  test("is mailauth's hash for 2,000 random bodies of blanks, CR, LF and text", () => {
    for (let seed = 1; seed <= 2000; seed++) {
      const body = randomBody(seed);
      if (relaxedBodyHash(body) !== reference(body)) throw new Error(`seed ${seed}: ${JSON.stringify(body.toString())}`);
    }
  });

  test("is mailauth's hash for the bodies of every test message (newsletters, malformed MIME, bounces)", () => {
    const all = files(join(import.meta.dir, "../../test/fixtures")).filter((f) => /\.(eml|html|txt)$/.test(f));
    expect(all.length).toBeGreaterThan(10);
    for (const f of all) {
      const raw = readFileSync(f);
      const sep = raw.indexOf("\r\n\r\n");
      const body = sep < 0 ? raw : raw.subarray(sep + 4);
      expect([f, relaxedBodyHash(body)]).toEqual([f, reference(body)]);
    }
  });
});
