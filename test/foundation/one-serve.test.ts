/**
 * One `serve` per data dir: a second one exits 1 naming the first before it touches the queue (its leases stay
 * as they are), whatever ports it is given; kill -9 frees the lock; no listener shares its port with another process.
 */
import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startFakeMx } from "../helpers/fake-mx.ts";
import { endAfterEach, tempDir, waitFor } from "../helpers/harness.ts";
import { relayConfig, serveUntilExit, startServe } from "../helpers/serve.ts";

const own = endAfterEach();
const serve = async (config: string) => own(await startServe(config));
const newDir = () => own(tempDir());

/** Submits one message over SMTP with swaks; resolves once it was accepted. */
async function submit(port: number): Promise<void> {
  const p = Bun.spawn(["swaks", "--server", `127.0.0.1:${port}`, "--from", "app@example.com", "--to", "someone@dest.test", "--silent", "2"], { stdout: "pipe", stderr: "pipe" });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`swaks failed: ${err}`);
}

/** A serve whose one message sits leased: the receiver keeps every connection waiting for its greeting. */
async function servingWithALease() {
  const mx = own(await startFakeMx({ host: "127.0.0.7", greetingDelayMs: 60_000 }));
  const dir = newDir();
  const config = relayConfig(dir.path, "127.0.0.7", mx.port);
  const first = await serve(config);
  await submit(first.smtpPort);
  const db = new Database(join(dir.path, "data", "outpost.db"), { readonly: true });
  const lease = () => (db.query("SELECT lease_until FROM recipients").get() as { lease_until: number | null } | null)?.lease_until ?? null;
  await waitFor(() => lease(), 10_000, "the recipient to be leased");
  return { config, first, lease, close: () => db.close() };
}

test("a second serve on the same data dir exits 1 naming the first's pid, on other ports too, and leaves its leases alone", async () => {
  const { config, first, lease, close } = await servingWithALease();
  try {
    const leased = lease();
    // the config listens on port 0, so the second one's SMTP and HTTP ports would differ from the first's
    const second = await serveUntilExit(config);
    expect({ code: second.code, err: second.err }).toEqual({ code: 1, err: expect.stringContaining(`pid ${first.proc.pid}`) });
    expect(second.out).not.toContain("leases_recovered");
    expect(second.out).not.toContain("_listening");
    expect(lease()).toBe(leased);
    expect(first.proc.exitCode).toBeNull();
  } finally {
    close();
  }
}, 40_000);

test("after kill -9 of the serve holding the data dir, the next serve starts and takes over its leases", async () => {
  const { config, first, close } = await servingWithALease();
  close();
  first.proc.kill("SIGKILL");
  await first.proc.exited;
  const next = await serve(config);
  const recovered = await waitFor(() => next.out().split("\n").find((l) => l.includes('"event":"leases_recovered"')), 5_000, "leases_recovered");
  expect((JSON.parse(recovered) as { count: number }).count).toBe(1);
}, 40_000);

test("a second outpost cannot share the first's HTTP port: it exits 1 naming the address", async () => {
  const a = newDir();
  const first = await serve(relayConfig(a.path, "127.0.0.1", 9));
  const b = newDir();
  const config = join(b.path, "outpost.toml");
  writeFileSync(config, `data_dir = "data"\n[delivery]\nsandbox = true\n[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:${first.httpPort}"\n`);
  const second = await serveUntilExit(config);
  expect({ code: second.code, err: second.err }).toEqual({ code: 1, err: expect.stringContaining(`127.0.0.1:${first.httpPort}`) });
  // every request still reaches the first
  for (let i = 0; i < 4; i++) expect((await fetch(`http://127.0.0.1:${first.httpPort}/healthz`)).status).toBe(200);
}, 40_000);
