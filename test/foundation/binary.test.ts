/** The compiled binary runs alone: copied to an empty directory, it migrates, adds a user, reports its version, and serves (one at a time). */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir, waitFor } from "../helpers/harness.ts";

const ROOT = join(import.meta.dir, "../..");
let build: { path: string; cleanup: () => void };
let empty: { path: string; cleanup: () => void };

beforeAll(() => {
  build = tempDir("outpost-build-");
  empty = tempDir("outpost-empty-");
  const p = Bun.spawnSync(
    // the entry points of `make build`: serve's checkpoint thread is a module of its own
    ["bun", "build", join(ROOT, "src/main.ts"), join(ROOT, "src/db/checkpoint-worker.ts"), "--compile", "--minify", "--bytecode", "--format=esm", "--outfile", join(build.path, "outpost")],
    { cwd: ROOT },
  );
  if (p.exitCode !== 0) throw new Error(p.stderr.toString());
  copyFileSync(join(build.path, "outpost"), join(empty.path, "outpost"));
}, 120_000);

afterAll(() => {
  build.cleanup();
  empty.cleanup();
});

/** `outpost serve` from the empty directory, its stdout collected, once it has started. */
async function serveStarted(): Promise<{ serve: ReturnType<typeof Bun.spawn>; out: () => string }> {
  const env = { PATH: "/usr/bin:/bin", HOME: empty.path };
  const serve = Bun.spawn([join(empty.path, "outpost"), "serve"], { cwd: empty.path, env, stdout: "pipe", stderr: "pipe" });
  let out = "";
  void (async () => {
    for await (const chunk of serve.stdout as ReadableStream<Uint8Array>) out += new TextDecoder().decode(chunk);
  })();
  await waitFor(() => out.includes('"event":"started"'), 15_000, "the binary's serve to start");
  return { serve, out: () => out };
}

function run(...args: string[]) {
  // a bare environment: no bun, no node_modules, no sources next to it
  const p = Bun.spawnSync([join(empty.path, "outpost"), ...args], { cwd: empty.path, env: { PATH: "/usr/bin:/bin", HOME: empty.path } });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

test("the binary prints its version from an empty directory", () => {
  const r = run("version");
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/^outpost \d/);
});

test("the binary applies its embedded migrations and adds a user", () => {
  const m = run("migrate");
  expect(m.code, m.err).toBe(0);
  expect(existsSync(join(empty.path, "data/outpost.db"))).toBe(true);
  const u = run("user", "add", "alice");
  expect(u.code, u.err).toBe(0);
  expect(u.out).toMatch(/^password: /m);
});

test("the binary's serve holds the data dir: a second one exits 1 naming the first", async () => {
  writeFileSync(join(empty.path, "outpost.toml"), `[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\n`);
  const { serve: first } = await serveStarted();
  try {
    const second = run("serve");
    expect({ code: second.code, err: second.err }).toEqual({ code: 1, err: expect.stringContaining(`another outpost serve (pid ${first.pid})`) });
  } finally {
    first.kill("SIGTERM");
  }
  expect(await first.exited).toBe(0);
}, 30_000);

test("the binary serves the docs page and its script from itself, with no node_modules anywhere near it", async () => {
  writeFileSync(join(empty.path, "outpost.toml"), `[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\n`);
  const { serve, out } = await serveStarted();
  try {
    const port = Number(/"event":"http_listening".*?"port":(\d+)/.exec(out())![1]);
    const page = new URL("/docs", `http://127.0.0.1:${port}`);
    const html = await (await fetch(page)).text();
    const src = /<script[^>]*\ssrc="([^"]+)"/.exec(html)![1]!;
    const script = await fetch(new URL(src, page));
    expect(script.status).toBe(200);
    expect((await script.arrayBuffer()).byteLength).toBeGreaterThan(1_000_000);
  } finally {
    serve.kill("SIGTERM");
  }
  expect(await serve.exited).toBe(0);
}, 30_000);

test("the binary's serve checkpoints on its own thread: a stored message reaches the database file", async () => {
  writeFileSync(join(empty.path, "outpost.toml"), `[smtp]\nlisten = ["127.0.0.1:0"]\ntrusted_networks = ["127.0.0.0/8"]\n[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\n`);
  const { serve, out } = await serveStarted();
  try {
    const port = Number(/"event":"smtp_listening".*?"port":(\d+)/.exec(out())![1]);
    const db = join(empty.path, "data/outpost.db");
    // the subject is a column of the message's row: in the database file itself only once a checkpoint copied it
    // from the WAL (the file's size says less: a commit may reuse pages from the free list)
    const marker = `checkpointed-${crypto.randomUUID()}`;
    // a few pages, well below the 1000 after which a commit would checkpoint by itself; kept in its row (a body of
    // 16 KiB or more would go to a body file, not through the WAL)
    const body = `Subject: ${marker}\r\n\r\n${"x".repeat(76).concat("\r\n").repeat(190)}`;
    const sent = Bun.spawnSync(["swaks", "--server", `127.0.0.1:${port}`, "--from", "a@example.org", "--to", "b@example.test", "--data", "-"], { stdin: Buffer.from(body) });
    expect(sent.exitCode, sent.stdout.toString()).toBe(0);
    await waitFor(() => readFileSync(db).includes(marker), 10_000, "the WAL copied into the database file");
    expect(out()).not.toContain("checkpoint_thread_failed");
  } finally {
    serve.kill("SIGTERM");
  }
  expect(await serve.exited).toBe(0);
}, 30_000);
