/**
 * Webhooks in a running `serve` (in process): a receiver that is down never slows delivery; a hook with a user gets
 * only that user's events; a hook taken out by a reload stops its rows; a hook naming an unknown user is refused.
 */
import { afterEach, expect, test } from "bun:test";
import { addUser } from "../../src/auth/users.ts";
import { ConfigError } from "../../src/config/errors.ts";
import { openStore } from "../../src/db/client.ts";
import type { UserId } from "../../src/mail/ids.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";
import { startReceiver, type Receiver } from "../helpers/webhook-receiver.ts";

let rt: Runtime | null = null;
let mx: FakeMx | null = null;
let dir: ReturnType<typeof tempDir> | null = null;
let receivers: Receiver[] = [];
const logs: Record<string, unknown>[] = [];

afterEach(async () => {
  await rt?.stop();
  await mx?.stop();
  for (const r of receivers) await r.stop();
  dir?.cleanup();
  rt = mx = dir = null;
  receivers = [];
  logs.length = 0;
});

function receiver(...args: Parameters<typeof startReceiver>): Receiver {
  const r = startReceiver(...args);
  receivers.push(r);
  return r;
}

const log = createLogger("info", (l) => logs.push(JSON.parse(l) as Record<string, unknown>));

function submit(r: Runtime, userId: number | null, recipients: string[], subject: string) {
  return r.intake.accept({
    userId: userId as UserId | null, allowedDomains: null, envelopeFrom: "app@example.com", recipients, source: "api",
    raw: Buffer.from(`From: app@example.com\r\nTo: ${recipients[0]}\r\nSubject: ${subject}\r\n\r\nHello\r\n`),
  });
}

const count = (r: Runtime, sql: string) => (r.store.sqlite.query(sql).get() as { n: number }).n;

test("a webhook receiver that never answers does not slow delivery: the mail goes out while its events wait", async () => {
  const hanging = receiver({ secret: "s", respond: () => new Promise(() => {}) });
  mx = await startFakeMx({ host: "127.0.0.2" });
  dir = tempDir();
  const config = testConfig(dir.path, `[http]\nlisten = "127.0.0.1:0"\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n` +
    `[[webhook]]\nname = "hanging"\nurl = "${hanging.url}"\nsecret = "s"\n` +
    `[[webhook]]\nname = "refused"\nurl = "http://127.0.0.1:9/none"\nsecret = "s"\n`);
  rt = (await startRuntime(config, log)).rt;
  const r = rt;
  for (let i = 0; i < 40; i++) await submit(r, null, [`r${i}@dest${i % 4}.test`], `m${i}`);
  await waitFor(() => count(r, "SELECT count(*) AS n FROM recipients WHERE status = 'delivered'") === 40, 20_000, "every message delivered");
  expect(mx.messages).toHaveLength(40);
  // the hanging hook holds its few request slots, no more; nothing of it has been settled
  expect(hanging.maxOpen()).toBeLessThanOrEqual(4);
  expect(count(r, "SELECT count(*) AS n FROM webhook_outbox WHERE hook = 'hanging' AND state IS NULL")).toBe(80);
  await waitFor(() => count(r, "SELECT count(*) AS n FROM webhook_outbox WHERE hook = 'refused' AND attempts > 0") > 0, 5_000, "the refused hook's first failures");
});

test("a hook with a user gets only that user's events; a hook a reload takes out stops its rows, logged", async () => {
  dir = tempDir();
  const path = dir.path;
  const mine = receiver({ secret: "alice-secret" });
  const everyone = receiver({ secret: "all-secret", respond: () => new Promise(() => {}) });
  const base = `[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\n` +
    `[[webhook]]\nname = "alice"\nuser = "alice"\nurl = "${mine.url}"\nsecret = "alice-secret"\n`;
  const withAll = `${base}[[webhook]]\nname = "all"\nurl = "${everyone.url}"\nsecret = "all-secret"\n`;
  const config = testConfig(path, withAll);
  const store = openStore(config.database.path);
  const alice = (await addUser(store.db, "alice", "pw")).id;
  const bob = (await addUser(store.db, "bob", "pw")).id;
  store.close();
  rt = (await startRuntime(config, log)).rt;
  const r = rt;
  const a = await submit(r, alice, ["x@dest.test"], "from alice");
  const b = await submit(r, bob, ["y@dest.test"], "from bob");
  // every event of both messages is recorded (the hook for everyone has its four rows), and alice's hook has none left
  await waitFor(() => count(r, "SELECT count(*) AS n FROM webhook_outbox WHERE hook = 'all'") === 4, 10_000, "both messages' events");
  await waitFor(() => count(r, "SELECT count(*) AS n FROM webhook_outbox WHERE hook = 'alice' AND state IS NULL") === 0, 10_000, "alice's hook done");
  expect(mine.received.map((x) => [x.event.message_id, x.event.type])).toEqual([[a.id, "queued"], [a.id, "delivered"]]);
  expect(mine.received.every((x) => x.signatureOk)).toBe(true);
  expect(mine.received.some((x) => x.event.message_id === b.id)).toBe(false);

  r.reload(() => testConfig(path, base));
  const rows = r.store.sqlite.query("SELECT hook, state FROM webhook_outbox WHERE hook = 'all'").all() as { state: string }[];
  expect(rows.map((x) => x.state)).toEqual(["orphaned", "orphaned", "orphaned", "orphaned"]);
  expect(logs.find((l) => l.event === "webhook_orphaned")).toMatchObject({ hook: "all", rows: 4 });
  const metrics = await (await fetch(`http://127.0.0.1:${r.http!.port}/metrics`)).text();
  expect(metrics).toContain('outpost_webhook_orphaned_total{hook="all"} 4');

  // a reload naming a user that does not exist is refused whole, and the running hooks stay
  r.reload(() => testConfig(path, `${base}[[webhook]]\nname = "ghost"\nuser = "nobody"\nurl = "${everyone.url}"\nsecret = "s"\n`));
  expect(logs.find((l) => l.event === "config_reload_refused")).toMatchObject({ error: expect.stringContaining('webhook[1].user: no user "nobody"') });
  await submit(r, alice, ["z@dest.test"], "again");
  await waitFor(() => mine.acknowledged.length === 4, 10_000, "alice's next events");
  expect(count(r, `SELECT count(*) AS n FROM webhook_outbox WHERE hook = 'ghost'`)).toBe(0);
});

test("serve refuses a hook whose user does not exist, naming the key (exit 2)", async () => {
  dir = tempDir();
  const config = testConfig(dir.path, `[http]\nlisten = "127.0.0.1:0"\n[[webhook]]\nuser = "nobody"\nurl = "http://127.0.0.1:9/h"\nsecret = "s"\n`);
  const error = await startRuntime(config, log).then(() => null, (e: unknown) => e);
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).key).toBe("webhook[0].user");
  expect((error as ConfigError).message).toContain('no user "nobody" (see outpost user list)');
});
