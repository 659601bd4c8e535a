/**
 * `outpost serve` as a child process, mail submitted over SMTP by Python's smtplib, delivered to a slow scripted
 * receiver: kill -9 mid-delivery and restart → every accepted message arrives at least once; SIGTERM mid-delivery
 * → exit 0 within 30 s with no recipient left leased.
 */
import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { endAfterEach, tempDir, waitFor } from "../helpers/harness.ts";
import { relayConfig, startServe } from "../helpers/serve.ts";

const own = endAfterEach();
const serve = async (config: string) => own(await startServe(config));

/** Sends `count` messages over one SMTP session; resolves with the subjects answered 250. */
async function submit(port: number, count: number, prefix: string): Promise<string[]> {
  const script = `
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", ${port}, timeout=20)
s.ehlo("client.test")
for i in range(${count}):
    subject = "${prefix}-%d" % i
    msg = "From: app@example.com\\r\\nTo: r%d@dest.test\\r\\nSubject: %s\\r\\n\\r\\nbody %d\\r\\n" % (i, subject, i)
    s.sendmail("app@example.com", ["r%d@dest.test" % i], msg)
    print("accepted " + subject, flush=True)
s.quit()
`;
  const p = Bun.spawn(["python3", "-c", script], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`smtplib failed: ${err}`);
  return out.split("\n").filter((l) => l.startsWith("accepted ")).map((l) => l.slice(9));
}

function arrived(m: FakeMx): Set<string> {
  return new Set(m.messages.map((x) => /^Subject: (\S+)\r$/m.exec(x.raw.toString())?.[1] ?? ""));
}

/** A serve relaying `count` accepted messages to a receiver that takes `delayMs` per message, once `started` arrived. */
async function deliveringServe(count: number, prefix: string, delayMs: number, started: number) {
  const mx = own(await startFakeMx({ host: "127.0.0.3", delayMs }));
  const dir = own(tempDir());
  const config = relayConfig(dir.path, "127.0.0.3", mx.port, `per_destination_connections = 2\nretry = ["1s"]`);
  const child = await serve(config);
  const accepted = await submit(child.smtpPort, count, prefix);
  expect(accepted.length).toBe(count);
  await waitFor(() => mx.messages.length >= started, 20_000, "delivery to start");
  return { config, child, accepted, mx, dir };
}

test("after kill -9 mid-delivery and a restart, every accepted message arrives at least once", async () => {
  const { config, child: first, accepted, mx } = await deliveringServe(25, "crash", 80, 3);
  first.proc.kill("SIGKILL");
  await first.proc.exited;
  const before = arrived(mx).size;
  expect(before).toBeLessThan(25); // it really died mid-delivery

  const second = await serve(config);
  // the restart frees the leases taken before the crash at once (recoverLeases), not after the 20 s lease
  const recovered = await waitFor(() => second.out().split("\n").find((l) => l.includes('"event":"leases_recovered"')), 5_000, "leases_recovered");
  expect((JSON.parse(recovered) as { count: number }).count).toBeGreaterThan(0);
  await waitFor(() => accepted.every((s) => arrived(mx).has(s)), 45_000, "every accepted message to arrive");
  expect(arrived(mx).size).toBe(25);
}, 58_000);

test("SIGTERM mid-delivery exits 0 within 30 s and leaves no recipient leased", async () => {
  const { child, mx, dir } = await deliveringServe(20, "term", 150, 1);
  const t0 = Date.now();
  child.proc.kill("SIGTERM");
  const code = await child.proc.exited;
  expect(code).toBe(0);
  expect(Date.now() - t0).toBeLessThan(30_000);
  const db = new Database(join(dir.path, "data", "outpost.db"), { readonly: true });
  try {
    const leased = db.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get() as { n: number };
    expect(leased.n).toBe(0);
    const byStatus = db.query("SELECT status, count(*) AS n FROM recipients GROUP BY status").all() as { status: string; n: number }[];
    const total = byStatus.reduce((a, r) => a + r.n, 0);
    expect(total).toBe(20);
    // what the receiver accepted is recorded delivered; the rest waits in the queue for the next start
    const delivered = byStatus.find((r) => r.status === "delivered")?.n ?? 0;
    expect(delivered).toBe(mx.messages.length);
  } finally {
    db.close();
  }
}, 40_000);
