/**
 * scanData against the pass it stands in for, smtp-server's own SMTPStream `_feedDataStream`: both run in a real
 * SMTPStream on the same inputs and chunkings, and everything a user of the stream can see must be the same.
 */
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { SMTPStream } from "smtp-server/lib/smtp-stream.js";
import { scanData } from "./data-scan.ts";

const library = SMTPStream.prototype._feedDataStream;
type Feed = typeof library;

/** What the stream's users see: each message, the commands, and the parser's state after each chunk. */
interface Trace {
  messages: Array<{ body: string; byteLength: number; sizeExceeded: boolean; dataBytes: number }>;
  commands: string[];
  afterChunk: string[];
  error?: string;
  /** a chunk smtp-server never finished with (it can lose its continuation: see data-scan.ts) */
  stuck?: number;
}

/** `p`'s value, or "stuck" when it has not settled after many turns of the event loop. */
async function settled<T>(p: Promise<T>): Promise<T | "stuck"> {
  let value: T | "stuck" = "stuck";
  void p.then((v) => (value = v));
  for (let turn = 0; turn < 2000 && value === "stuck"; turn++) await new Promise((r) => setImmediate(r));
  return value;
}

async function replay(feed: Feed, chunks: Buffer[], maxBytes: number | undefined): Promise<Trace> {
  const parser = new SMTPStream();
  parser._feedDataStream = feed;
  const trace: Trace = { messages: [], commands: [], afterChunk: [] };
  parser.on("error", (e: Error) => (trace.error = e.message));
  parser.oncommand = (command, next) => {
    const line = command.toString("latin1");
    trace.commands.push(line);
    if (line === "DATA") {
      const stream = parser.startDataMode(maxBytes);
      const parts: Buffer[] = [];
      stream.on("data", (c: Buffer) => parts.push(c));
      stream.on("end", () => {
        const { byteLength, sizeExceeded } = stream;
        trace.messages.push({ body: Buffer.concat(parts).toString("latin1"), byteLength, sizeExceeded, dataBytes: parser.dataBytes });
        // as smtp-connection does once onData has answered
        setImmediate(() => parser.continue());
      });
    }
    next?.();
  };
  for (const [i, chunk] of chunks.entries()) {
    const err = await settled(new Promise<Error | null | undefined>((resolve) => parser.write(chunk, resolve)));
    if (err === "stuck") trace.stuck = i;
    if (err) return trace;
    const s = parser._dataStream;
    trace.afterChunk.push(
      JSON.stringify([
        parser._dataMode, parser.dataBytes, parser._atDataStart, parser._remainder,
        (parser._lastBytes || Buffer.alloc(0)).toString("latin1"), s?.byteLength, s?.sizeExceeded,
      ]),
    );
  }
  if (!trace.error && (await settled(new Promise<boolean>((resolve) => parser.end(() => resolve(true))))) === "stuck") trace.stuck = -1;
  return trace;
}

/** A small seeded generator, so a failing case can be replayed from its number. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TOKENS = ["\r", "\n", ".", "..", "...", "\r\n", "\r\n.", "\r\n..", "\n.", "\n..", "\r\n.\r\n", ".\r\n", "\r.\r", "\n.\n"];
const COMMANDS = ["RSET\r\n", "NOOP\r\n", "MAIL FROM:<a@b.example>\r\n", "QUIT\r\n", "QUIT"];

/** DATA, a body of text runs and the tokens above, the terminator (mostly) with pipelined commands; up to 3 times. */
function input(rnd: () => number): string {
  const pick = <T>(list: readonly T[]) => list[Math.floor(rnd() * list.length)]!;
  let out = "";
  for (let m = rnd() < 0.25 ? 2 : 1; m > 0; m--) {
    out += "DATA\r\n";
    const long = rnd() < 0.2;
    for (let t = Math.floor(rnd() * 24); t > 0; t--) {
      out += rnd() < 0.35 ? "x".repeat(1 + Math.floor(rnd() * (long ? 3000 : 12))) : pick(TOKENS);
    }
    if (rnd() < 0.15) return out;
    out += "\r\n.\r\n";
    for (let c = Math.floor(rnd() * 3); c > 0; c--) out += pick(COMMANDS);
  }
  return out;
}

/** The chunkings for one input: random cuts, fixed sizes, 1-byte chunks (short inputs), each terminator split at every offset. */
function chunkings(bytes: Buffer, rnd: () => number): Buffer[][] {
  const cutAt = (cuts: number[]) => {
    const points = [...new Set(cuts.filter((c) => c > 0 && c < bytes.length))].sort((a, b) => a - b);
    return [0, ...points].map((p, i) => bytes.subarray(p, points[i] ?? bytes.length));
  };
  const every = (n: number) => cutAt(Array.from({ length: Math.ceil(bytes.length / n) }, (_, i) => i * n));
  const out = [[bytes], cutAt(Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => Math.floor(rnd() * bytes.length)))];
  out.push(every(2 + Math.floor(rnd() * 6)));
  if (bytes.length <= 400) out.push(every(1));
  const end = bytes.indexOf("\r\n.\r\n", 6);
  if (end >= 0) for (let k = -6; k <= 7; k++) out.push(cutAt([end + k]), cutAt([end + k, end + k + 1]));
  const dataStart = bytes.indexOf("DATA\r\n") + 6;
  for (let k = 1; k <= 5; k++) out.push(cutAt([dataStart, dataStart + k]));
  return out;
}

function sizeLimit(rnd: () => number, length: number): number | undefined {
  return [undefined, 1, 40, 500, Math.floor(length / 2)][Math.floor(rnd() * 5)];
}

test("scanData emits the same bytes, ends DATA at the same place and counts the same size as smtp-server for random inputs and chunkings", async () => {
  let compared = 0;
  for (let n = 0; n < 1000; n++) {
    const rnd = random(n);
    const bytes = Buffer.from(input(rnd), "latin1");
    const limit = sizeLimit(rnd, bytes.length);
    for (const chunks of chunkings(bytes, rnd)) {
      const want = await replay(library, chunks, limit);
      const got = await replay(scanData, chunks, limit);
      if (!Bun.deepEquals(got, want)) {
        // the case, replayable: its seed and its chunk lengths
        expect({ seed: n, chunks: chunks.map((c) => c.length), limit, got }).toEqual({ seed: n, chunks: chunks.map((c) => c.length), limit, got: want });
      }
      compared++;
    }
  }
  expect(compared).toBeGreaterThan(20_000);
}, 120_000);

test("scanData matches smtp-server on the edge cases of DATA's first bytes and dot-stuffed lines, in 1-byte chunks and whole", async () => {
  const bodies = [
    ".\r\n", "..\r\n.\r\n", "...\r\n.\r\n", ".\r\n.\r\n", "\n..x\r\n.\r\n", "\r\n.\r\n", "\r\n..\r\n.\r\n", "x\n.\r\n.\r\n",
    "x\r\n..\r\n..\r\n.\r\nRSET\r\n", "x\r\n.\n.\r\n.\r\n", "ab\r\n.\r", "a\r\n.x\r\n.\r\nDATA\r\n.\r\nQUIT\r\n",
  ];
  for (const body of bodies) {
    const bytes = Buffer.from(`DATA\r\n${body}`, "latin1");
    for (const chunks of [[bytes], [...bytes].map((b) => Buffer.from([b]))]) {
      expect(await replay(scanData, chunks, undefined)).toEqual(await replay(library, chunks, undefined));
    }
  }
});

test("a 50 KiB body with hundreds of dot-stuffed lines comes out the same as through smtp-server, in socket-sized chunks", async () => {
  const line = (i: number) => (i % 3 === 0 ? `..line ${i} starts with a dot` : `line ${i} of the message, some text to fill it`);
  const body = Array.from({ length: 1100 }, (_, i) => line(i)).join("\r\n");
  const bytes = Buffer.from(`DATA\r\n${body}\r\n.\r\nQUIT\r\n`, "latin1");
  for (const size of [65536, 16384, 1460, 1000, 7]) {
    const chunks = Array.from({ length: Math.ceil(bytes.length / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size));
    const got = await replay(scanData, chunks, 51_200);
    expect(got).toEqual(await replay(library, chunks, 51_200));
    expect(got.messages[0]!.body).toBe(`\r\n${body}\r\n`.replaceAll("\r\n..", "\r\n.").slice(2));
    expect(got.commands).toEqual(["DATA", "QUIT"]);
  }
});

// smtp-server has no hook for its DATA pass; data-scan.ts stands in for this exact version of it
test("smtp-server's DATA pass is still the one scanData was checked against (after an upgrade: re-check data-scan.ts, then update this pin)", () => {
  const pkg = JSON.parse(readFileSync(require.resolve("smtp-server/package.json"), "utf8")) as { version: string };
  const p = SMTPStream.prototype;
  const source = [p._write, p._feedDataStream, p._countDataBytes, p._endDataMode, p.startDataMode].map((f) => f.toString()).join("\n");
  const pinned = { version: pkg.version, sha256: createHash("sha256").update(source).digest("hex") };
  expect(pinned).toEqual({ version: "3.21.6", sha256: "a689a4d75359e24f1653c5fe7b11be6881069985cb0a17aaddcc6fb88d57f89c" });
});
