/**
 * Expiry at a dead destination, end to end below the runtime: the scheduler with the real SMTP transport against a
 * closed loopback port, a real SQLite queue, the outcome recorder, and an in-process receiver for healthy mail.
 * The clock is injected: the queued mail is made two days old without waiting.
 */
import { afterEach, expect, test } from "bun:test";
import { createServer } from "node:net";
import { parseConfig } from "../../src/config/load.ts";
import { openStore, type Store } from "../../src/db/client.ts";
import { DeliveryLoop } from "../../src/delivery/loop.ts";
import { OutcomeRecorder } from "../../src/delivery/outcome.ts";
import { SmtpTransport } from "../../src/delivery/transport.ts";
import type { RouteResult, Router } from "../../src/delivery/types.ts";
import { EventRecorder } from "../../src/events/record.ts";
import { silentLogger } from "../../src/observe/log.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { QueueClaimer } from "../../src/queue/claim.ts";
import { Enqueuer } from "../../src/queue/enqueue.ts";
import { startFakeMx } from "../helpers/fake-mx.ts";
import { tempDir, waitFor } from "../helpers/harness.ts";
import { pastEveryId } from "../helpers/ids.ts";

const DAY = 24 * 3600_000;
const stops: (() => unknown)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/** A loopback port nothing listens on: connections to it are refused at once. */
async function closedPort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test("mail two days old for a refusing destination is bounced as expired, with a DSN per message; young mail waits, healthy mail goes", async () => {
  let offset = pastEveryId() - Date.now();
  const now = () => Date.now() + offset;
  const dir = tempDir();
  stops.push(() => dir.cleanup());
  const mx = await startFakeMx({ host: "127.0.0.2" });
  stops.push(() => mx.stop());
  const deadPort = await closedPort("127.0.0.3");
  const config = parseConfig(`data_dir = ${JSON.stringify(dir.path)}\nhostname = "outpost.test"\n[delivery]\nmax_queue_time = "1d"\n`, {
    file: null, baseDir: dir.path, env: {},
  });
  const store: Store = openStore(config.database.path);
  stops.push(() => store.close());
  const events = new EventRecorder(store.sqlite, []);
  const enqueuer = new Enqueuer(store.sqlite, events, now);
  const metrics = new Metrics();
  const dsns: string[] = [];
  const outcomes = new OutcomeRecorder({
    sqlite: store.sqlite, events, delivery: config.delivery, bounceDomain: "", hostname: "outpost.test", log: silentLogger, metrics, now,
    intake: { acceptNow: (s) => (dsns.push(s.recipients.join()), { id: "dsn" as never, messageIdHeader: null, recipients: [] }) },
  });
  const router: Router = {
    async route(domain: string): Promise<RouteResult> {
      const [host, port] = domain === "dead.test" ? ["127.0.0.3", deadPort] : ["127.0.0.2", mx.port];
      return { kind: "ok", destination: { key: host, hosts: [{ host, port, preference: 0 }], tls: "opportunistic", static: true } };
    },
  };
  const transport = new SmtpTransport({
    hostname: "outpost.test", tls: "opportunistic", log: silentLogger, timeouts: { connectMs: 2000, greetingMs: 2000, socketMs: 3000, quitMs: 500 },
  });
  const enqueue = (recipients: string[]) => enqueuer.enqueue({
    userId: null, envelopeFrom: "app@example.com", recipients, suppressed: new Set(), body: Buffer.from("Subject: hi\r\n\r\nhello\r\n"),
    subject: "hi", source: "api", options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
  });
  for (let i = 0; i < 50; i++) await enqueue(Array.from({ length: 20 }, (_, j) => `u${i}-${j}@dead.test`));
  offset += 2 * DAY;
  await enqueue(["young@dead.test"]);
  await enqueue(["fine@alive.test"]);

  const loop = new DeliveryLoop({
    config: config.delivery, claimer: new QueueClaimer(store.sqlite, now), outcomes, router, transport, log: silentLogger, now,
    batch: (fn) => store.sqlite.transaction(fn).immediate(),
    options: { idleMs: 200, throttle: { deadMs: 60_000 } },
  }).start();
  stops.push(() => loop.stop());
  const count = (where: string) => (store.sqlite.query(`SELECT count(*) AS n FROM recipients WHERE ${where}`).get() as { n: number }).n;
  await waitFor(() => count("status = 'bounced'") === 1_000, 15_000, "the 1,000 old recipients at dead.test bounced");
  expect(count("status = 'bounced' AND last_status = '4.4.7' AND last_reply LIKE 'message expired after 2d in the queue; last reply: could not connect to 127.0.0.3: %connection refused'")).toBe(1_000);
  expect(count("address = 'young@dead.test' AND status = 'queued'")).toBe(1);
  await waitFor(() => count("address = 'fine@alive.test' AND status = 'delivered'") === 1, 5000, "delivery to alive.test");
  expect(dsns.length).toBe(50);
  expect(/^outpost_delivery_attempts_total\{result="expired"\} 1000$/m.test(await metrics.render())).toBe(true);
});
