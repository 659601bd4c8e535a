import { expect, test } from "bun:test";
import { firstBareLineEnd, LineEndWriter, toCrlf } from "./line-ends.ts";

/** The rule as one regular expression: what intake has always applied. */
const reference = (b: Buffer) => Buffer.from(b.toString("latin1").replace(/\r\n|\r|\n/g, "\r\n"), "latin1");

/** Random bytes rich in CR, LF, dots and NUL: the material of smuggling attempts. */
function randomMessage(n: number, seed: number): Buffer {
  let x = seed;
  const next = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x);
  const alphabet = [0x0d, 0x0a, 0x2e, 0x00, 0x41, 0x20, 0x0d, 0x0a, 0xe9];
  return Buffer.from(Array.from({ length: n }, () => alphabet[next() % alphabet.length]!));
}

test("written in any chunks, the result is byte for byte what the one-pass rule gives (CRLF stays, bare CR and LF become CRLF)", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const msg = randomMessage(1 + (seed % 97), seed);
    const want = reference(msg);
    expect(toCrlf(msg).equals(want), `toCrlf, seed ${seed}`).toBe(true);
    // every split point, and single bytes
    for (const size of [1, 2, 3, 7, 64]) {
      const w = new LineEndWriter(4, 16); // small on purpose: it has to grow
      for (let i = 0; i < msg.length; i += size) w.write(msg.subarray(i, i + size));
      expect(w.finish().equals(want), `chunks of ${size}, seed ${seed}`).toBe(true);
    }
  }
});

test("the smuggling variants are kept inside the message as plain CRLF lines", () => {
  for (const s of ["a\n.\nMAIL", "a\r.\rMAIL", "a\n.\r\nMAIL", "a\r\n.\nMAIL", "a\r.\r\nMAIL", "a\r\n.\rMAIL", "\r\r\n\n\r"]) {
    const w = new LineEndWriter(0);
    for (const ch of s) w.write(Buffer.from(ch, "latin1"));
    expect(w.finish().toString("latin1"), JSON.stringify(s)).toBe(reference(Buffer.from(s, "latin1")).toString("latin1"));
  }
});

test("a CR ending one chunk is completed by the next chunk's LF, or made CRLF when none follows", () => {
  const w = new LineEndWriter(100);
  w.write(Buffer.from("a\r"));
  w.write(Buffer.from("\nb\r"));
  w.write(Buffer.from("c\r"));
  expect(w.finish().toString()).toBe("a\r\nb\r\nc\r\n");
});

test("a message already in CRLF is not copied by toCrlf; the writer keeps its room free in front", () => {
  const clean = Buffer.from("Subject: x\r\n\r\nbody\r\n");
  expect(toCrlf(clean)).toBe(clean);
  expect(firstBareLineEnd(clean)).toBe(-1);
  expect(firstBareLineEnd(Buffer.from("ab\r\ncd\nx"))).toBe(6);
  expect(firstBareLineEnd(Buffer.from("\nx"))).toBe(0);
  expect(firstBareLineEnd(Buffer.from("x\r"))).toBe(1);
  const w = new LineEndWriter(8, 100);
  w.write(clean);
  const out = w.finish();
  expect(out.toString()).toBe(clean.toString());
  expect(out.byteOffset - Buffer.from(out.buffer).byteOffset).toBeGreaterThanOrEqual(100);
});

test("a writer that outgrows its start grows once to growTo, keeping its room and every byte", () => {
  const w = new LineEndWriter(16, 64, 10_000);
  const chunks = Array.from({ length: 50 }, (_, i) => Buffer.from(`line ${i}\n`));
  for (const c of chunks) w.write(c);
  const out = w.finish();
  expect(out.toString()).toBe(chunks.map((c) => c.toString().replace("\n", "\r\n")).join(""));
  expect(out.byteOffset - Buffer.from(out.buffer).byteOffset).toBeGreaterThanOrEqual(64);
  expect(out.buffer.byteLength).toBeGreaterThanOrEqual(64 + 10_000);
});

/** How many Buffer searches `fn` makes (the line-end scan is indexOf calls). */
function searchesIn(fn: () => void): number {
  const indexOf = Buffer.prototype.indexOf;
  let searches = 0;
  Buffer.prototype.indexOf = function (this: Buffer, ...args: Parameters<Buffer["indexOf"]>) {
    searches++;
    return indexOf.apply(this, args);
  };
  try {
    fn();
  } finally {
    Buffer.prototype.indexOf = indexOf;
  }
  return searches;
}

test("a LineEndWriter's output is taken by toCrlf as it is, without a second scan (intake's check of SMTP mail)", () => {
  const w = new LineEndWriter(64 * 1024, 16);
  for (let i = 0; i < 500; i++) w.write(Buffer.from(`line ${i}\n`));
  const out = w.finish();
  expect(searchesIn(() => expect(toCrlf(out)).toBe(out))).toBe(0);
  // the same bytes in a Buffer no writer made are looked at
  const copy = Buffer.from(out);
  expect(searchesIn(() => expect(toCrlf(copy)).toBe(copy))).toBeGreaterThan(0);
});
