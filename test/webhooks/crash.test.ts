/**
 * `outpost serve` as a child process with a slow webhook receiver: kill -9 while POSTs are out, restart, and every
 * event reaches the receiver at least once (duplicates carry the same event id), each message's in order.
 */
import { expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { startFakeMx } from "../helpers/fake-mx.ts";
import { endAfterEach, tempDir, waitFor } from "../helpers/harness.ts";
import { relayConfig, startServe } from "../helpers/serve.ts";
import { startReceiver } from "../helpers/webhook-receiver.ts";

const own = endAfterEach();
const serve = async (config: string) => own(await startServe(config));

/** Sends `count` messages over one SMTP session (Python's smtplib); resolves once all were answered 250. */
async function submit(port: number, count: number): Promise<void> {
  const script = `
import smtplib
s = smtplib.SMTP("127.0.0.1", ${port}, timeout=20)
for i in range(${count}):
    msg = "From: app@example.com\\r\\nTo: r%d@dest.test\\r\\nSubject: hook-%d\\r\\n\\r\\nbody\\r\\n" % (i, i)
    s.sendmail("app@example.com", ["r%d@dest.test" % i], msg)
s.quit()
`;
  const p = Bun.spawn(["python3", "-c", script], { stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`smtplib failed: ${err}`);
}

function storedEvents(path: string): { id: string; message_id: string; type: string }[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.query("SELECT id, message_id, type FROM events ORDER BY id").all() as { id: number; message_id: string; type: string }[])
      .map((e) => ({ ...e, id: String(e.id) }));
  } finally {
    db.close();
  }
}

test("after kill -9 with webhook POSTs out and a restart, every event arrives at least once, each message's in order", async () => {
  const MESSAGES = 12;
  // slow: a quarter second per answer, so requests are out when the process dies
  const receiver = own(startReceiver({ secret: "crash-secret", respond: async () => (await Bun.sleep(250), 200) }));
  const mx = own(await startFakeMx({ host: "127.0.0.4" }));
  const dir = own(tempDir());
  const config = relayConfig(dir.path, "127.0.0.4", mx.port);
  appendFileSync(config, `[[webhook]]\nname = "app"\nurl = "${receiver.url}"\nsecret = "crash-secret"\n`);
  const first = await serve(config);
  await submit(first.smtpPort, MESSAGES);
  await waitFor(() => receiver.received.length >= 3 && receiver.open() > 0, 20_000, "webhooks in flight");
  first.proc.kill("SIGKILL");
  await first.proc.exited;
  const db = join(dir.path, "data", "outpost.db");
  expect(new Set(receiver.acknowledged).size).toBeLessThan(storedEvents(db).length); // it died with work left

  const second = await serve(config);
  const recovered = await waitFor(() => second.out().split("\n").find((l) => l.includes('"event":"webhook_leases_recovered"')), 5_000, "leases recovered");
  expect((JSON.parse(recovered) as { count: number }).count).toBeGreaterThan(0);
  const all = () => storedEvents(db);
  await waitFor(() => mx.messages.length >= MESSAGES && all().length === 2 * MESSAGES && all().every((e) => receiver.acknowledged.includes(e.id)),
    45_000, "every event acknowledged");

  const events = all();
  expect(events.filter((e) => e.type === "delivered")).toHaveLength(MESSAGES);
  for (const r of receiver.received) {
    expect(r.signatureOk).toBe(true);
    expect(r.event).toEqual(expect.objectContaining(events.find((e) => e.id === r.eventId)!));
  }
  // per message: its queued event reached the receiver before its delivered event ever did
  const firstArrival = (id: string) => receiver.received.findIndex((r) => r.eventId === id);
  for (const m of new Set(events.map((e) => e.message_id))) {
    const [queued, delivered] = events.filter((e) => e.message_id === m);
    expect(firstArrival(queued!.id)).toBeLessThan(firstArrival(delivered!.id));
  }
}, 60_000);
