/**
 * `serve` and the files it is given: only directories it creates are made 0700; a database it cannot open, a
 * damaged one, or one lost from a used data dir stops it with exit 1 and a message naming the file; the first
 * start's stdout is JSON lines only, its secrets on stderr.
 */
import { afterEach, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { runCli, tempDir } from "../helpers/harness.ts";
import { serveUntilExit, startServe, type ServeProcess } from "../helpers/serve.ts";

let dirs: ReturnType<typeof tempDir>[] = [];
let children: ServeProcess[] = [];

afterEach(async () => {
  for (const c of children) {
    c.proc.kill("SIGKILL");
    await c.proc.exited;
  }
  children = [];
  for (const d of dirs) d.cleanup();
  dirs = [];
});

/** A temp dir with outpost.toml: port 0 listeners, sandbox delivery, data in DIR/data unless `toml` says otherwise. */
function setup(toml = ""): { path: string; config: string; data: string } {
  const d = tempDir();
  dirs.push(d);
  const config = join(d.path, "outpost.toml");
  const head = /^data_dir\s*=/m.test(toml) ? "" : `data_dir = "data"\n`;
  writeFileSync(config, `${head}${toml}\n[delivery]\nsandbox = true\n[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n`);
  return { path: d.path, config, data: join(d.path, "data") };
}

async function serve(config: string): Promise<ServeProcess> {
  const child = await startServe(config);
  children.push(child);
  return child;
}

/** Starts and stops a serve cleanly, so the data dir holds a real, used database. */
async function usedOnce(config: string): Promise<ServeProcess> {
  const child = await serve(config);
  child.proc.kill("SIGTERM");
  expect(await child.proc.exited).toBe(0);
  return child;
}

test("the first start's stdout is JSON lines only; the password and API key are on stderr", async () => {
  const { config } = setup();
  const first = await usedOnce(config);
  const lines = first.out().split("\n").filter((l) => l !== "");
  expect(lines.length).toBeGreaterThan(3);
  for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
  expect(first.out()).not.toContain("op_");
  expect(first.err()).toMatch(/^password: \S+$/m);
  expect(first.err()).toMatch(/^api key: op_[A-Za-z0-9_-]{40}$/m);
});

test("users added before the first start are told how to make an API key; no admin is made", async () => {
  const { path, config } = setup();
  expect(runCli(path, ["user", "add", "alice", "--password", "alice-pass"]).code).toBe(0);
  const first = await serve(config);
  expect(first.err()).toContain("outpost key create NAME --user alice");
  expect(first.err()).not.toContain("api key:");
});

test("an existing data dir keeps its mode, with a warning; the one serve creates is 0700", async () => {
  const { config, data } = setup();
  mkdirSync(data, { mode: 0o755 });
  chmodSync(data, 0o755);
  const child = await serve(config);
  expect(statSync(data).mode & 0o777).toBe(0o755);
  const warning = child.out().split("\n").find((l) => l.includes('"event":"directory_not_private"'));
  expect(JSON.parse(warning ?? "{}")).toMatchObject({ level: "warn", path: data, mode: "0755" });

  const fresh = setup();
  const other = await serve(fresh.config);
  expect(statSync(fresh.data).mode & 0o777).toBe(0o700);
  expect(other.out()).not.toContain("directory_not_private");
});

test("a database serve may not open stops it with exit 1 naming the file, its owner and mode, and our uid", async () => {
  const { path, config } = setup(`data_dir = "data"\n[database]\nurl = "sqlite:db/outpost.db"`);
  const db = join(path, "db", "outpost.db");
  mkdirSync(join(path, "db"));
  new Database(db, { create: true }).close();
  let run: Awaited<ReturnType<typeof serveUntilExit>>;
  if (process.getuid?.() === 0) {
    // root reads everything: run as nobody, who owns the directories but not the database (root's, 0600)
    chmodSync(db, 0o600);
    for (const d of [path, join(path, "db")]) chownSync(d, 65534, 65534);
    run = await serveUntilExit(config, { uid: 65534, gid: 65534 });
  } else {
    chmodSync(db, 0o000);
    run = await serveUntilExit(config);
  }
  expect(run.code).toBe(1);
  expect(run.err).toMatch(new RegExp(`permission denied: ${db.replaceAll(".", "\\.")} is owned by uid \\d+, mode 0[0-7]00, we run as uid \\d+`));
});

test("a damaged database stops serve with exit 1 naming the file and what to do", async () => {
  const { config, data } = setup();
  await usedOnce(config);
  const file = join(data, "outpost.db");
  expect(existsSync(`${file}-wal`)).toBe(false); // all of it is in the file we damage
  const sqlite = new Database(file, { readonly: true });
  const page = (sqlite.query("PRAGMA page_size").get() as { page_size: number }).page_size;
  const root = (sqlite.query("SELECT rootpage FROM sqlite_schema WHERE name = 'recipients'").get() as { rootpage: number }).rootpage;
  sqlite.close();
  const fd = openSync(file, "r+");
  writeSync(fd, Buffer.alloc(page, 0xa5), 0, page, (root - 1) * page);
  closeSync(fd);

  const run = await serveUntilExit(config);
  expect(run.code).toBe(1);
  expect(run.err).toContain(`the database ${file} is damaged`);
  expect(run.err).toContain("Restore it from a backup");
  expect(run.out).not.toContain("_listening");
});

test("an empty or missing database in a data dir whose secret exists stops serve with exit 1; nothing is re-created", async () => {
  const { path, config, data } = setup();
  await usedOnce(config);
  const file = join(data, "outpost.db");
  truncateSync(file, 0);
  const empty = await serveUntilExit(config);
  expect(empty.code).toBe(1);
  expect(empty.err).toContain(`the database ${file} is missing or empty, but ${join(data, "secret")} shows this data dir was used before`);
  expect(empty.err).toContain("Restore the database from a backup");
  expect(empty.err).not.toContain("api key:");
  expect(statSync(file).size).toBe(0);

  rmSync(file);
  const missing = await serveUntilExit(config);
  expect(missing.code).toBe(1);
  expect(missing.err).toContain("is missing or empty");
  // nor does a command make an empty one, which serve could no longer tell from a new install
  for (const args of [["migrate"], ["user", "list"]]) expect(runCli(path, args)).toMatchObject({ code: 1, err: expect.stringContaining("is missing or empty") });
  expect(existsSync(file)).toBe(false);

  // what the message says works: without the secret, it is a first start again
  rmSync(join(data, "secret"));
  const fresh = await serve(config);
  expect(fresh.err()).toMatch(/^api key: op_/m);
});
