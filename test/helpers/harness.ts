/** @module test/helpers/harness — temp data dirs, configs from TOML snippets, in-process runtimes, bounded waits. */
import { afterEach, beforeEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load.ts";
import { openStore, type Store } from "../../src/db/client.ts";
import type { SyncFile } from "../../src/db/durable.ts";
import type { MessageOptions } from "../../src/queue/enqueue.ts";
import type { Config } from "../../src/config/schema.ts";
import { silentLogger, type Logger } from "../../src/observe/log.ts";
import { start, type Runtime, type StartOptions } from "../../src/runtime/start.ts";

export function tempDir(prefix = "outpost-test-"): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * A Config for a test: `toml` is any outpost.toml text; data_dir defaults to `dir`, listeners to port 0
 * on 127.0.0.1 unless the snippet sets them. (Port 0: the OS picks a free port; read it from the service.)
 */
/** What a test starts and must end: a runtime or server (stop) or a temp dir (cleanup). */
export type Owned = { stop(): unknown } | { cleanup(): void };

/**
 * Registers an afterEach that ends everything handed to the returned function during the test, newest first
 * (a runtime before the receiver it delivers to), whether the test passed or not.
 */
export function endAfterEach(): <T extends Owned>(thing: T) => T {
  const owned: Owned[] = [];
  afterEach(async () => {
    for (const t of owned.splice(0).reverse()) await ("stop" in t ? t.stop() : t.cleanup());
  });
  return (thing) => {
    owned.push(thing);
    return thing;
  };
}

/** A migrated SQLite store in a fresh temp dir for each test, closed and removed after it; call the getter in a test. */
export function storeEachTest(): () => Store {
  let dir: ReturnType<typeof tempDir> | undefined;
  let store: Store | undefined;
  beforeEach(() => {
    dir = tempDir();
    store = openStore(`${dir.path}/outpost.db`);
  });
  afterEach(() => {
    store?.close();
    dir?.cleanup();
    store = dir = undefined;
  });
  return () => {
    if (!store) throw new Error("storeEachTest: the store exists only while a test runs");
    return store;
  };
}

/** Per-message options with every feature off (tracking, CSS inlining, unsubscribe). */
export const OPTIONS_OFF: MessageOptions = { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false };

/**
 * A sync the test finishes by hand — the WAL's (`openStore(path, { syncWal: sync })`) or the body files'
 * (`BodyFileOptions.syncFile`): each call waits for its `done()` or `fail(e)`.
 */
export function heldSync(): { sync: SyncFile; calls: Array<{ fd: number; done: () => void; fail: (e: Error) => void }> } {
  const calls: Array<{ fd: number; done: () => void; fail: (e: Error) => void }> = [];
  const sync: SyncFile = (fd) => new Promise((resolve, reject) => calls.push({ fd, done: resolve, fail: reject }));
  return { sync, calls };
}

export function testConfig(dir: string, toml = ""): Config {
  const hasTop = (k: string) => new RegExp(`^\\s*${k}\\s*=`, "m").test(toml);
  const head = [
    hasTop("data_dir") ? "" : `data_dir = ${JSON.stringify(dir)}`,
    hasTop("hostname") ? "" : `hostname = "outpost.test"`,
  ].join("\n");
  return parseConfig(`${head}\n${withPortZeroSmtp(toml)}`, { file: null, baseDir: dir, env: {} });
}

/** Adds `listen = ["127.0.0.1:0"]` to [smtp] unless the snippet names its own SMTP listeners. */
function withPortZeroSmtp(toml: string): string {
  const line = `listen = ["127.0.0.1:0"]`;
  if (/^\s*\[smtp\]\s*$(?:\n(?!\s*\[).*)*\n\s*listen\s*=/m.test(toml)) return toml;
  if (/^\s*\[smtp\]\s*$/m.test(toml)) return toml.replace(/^(\s*\[smtp\]\s*)$/m, `$1\n${line}`);
  return `${toml}\n[smtp]\n${line}\n`;
}

/** Starts the whole runtime in this process; remember to `await rt.stop()`. */
export async function startRuntime(
  config: Config,
  log: Logger = silentLogger,
  opts: Omit<StartOptions, "announce"> = {},
): Promise<{ rt: Runtime; firstRun: string[] }> {
  const firstRun: string[] = [];
  const rt = await start(config, log, { ...opts, announce: (l) => firstRun.push(l) });
  return { rt, firstRun };
}

/**
 * A port that was free a moment ago on `host`: for a set-up that must name its port before it listens (a static
 * route back to outpost's own SMTP listener, smtp-sink, which cannot report a port 0 choice).
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Polls `fn` until it returns a truthy value or `ms` pass; throws with `what` on timeout. */
export async function waitFor<T>(fn: () => T | Promise<T>, ms = 5000, what = "condition"): Promise<NonNullable<T>> {
  const until = Date.now() + ms;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    await Bun.sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

/** The secret printed on a first-run line such as "api key: op_…". */
export function secretFrom(lines: string[], label: "password" | "api key"): string {
  const line = lines.find((l) => l.startsWith(`${label}: `));
  if (!line) throw new Error(`no "${label}:" line in ${JSON.stringify(lines)}`);
  return line.slice(label.length + 2);
}

const MAIN = join(import.meta.dir, "../../src/main.ts");

export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/** Runs `outpost ARGS…` from source as a process in `cwd` (10 s at most), as an operator would. */
export function runCli(cwd: string, args: string[]): CliResult {
  const p = Bun.spawnSync(["bun", MAIN, ...args], { cwd, env: { ...process.env, OUTPOST_LOG: "error" }, timeout: 10_000 });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}
