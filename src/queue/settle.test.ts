import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import type { RecipientId } from "../mail/ids.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer } from "./enqueue.ts";
import { QueueSettler } from "./settle.ts";

let dir: ReturnType<typeof tempDir>;
let store: Store;
let settler: QueueSettler;
let ids: RecipientId[];
const NOW = 1_700_000_000_000;

beforeEach(async () => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  const events = new EventRecorder(store.sqlite, [{ name: "app", url: "http://127.0.0.1:9/hook", events: ["bounced"], userId: null, secret: "s" }]);
  const m = await new Enqueuer(store.sqlite, events, () => NOW).enqueue({
    userId: 7 as never, envelopeFrom: "s@example.org", recipients: ["a@d.test", "b@d.test", "c@d.test"], suppressed: new Set(),
    body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "api",
    options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
  });
  ids = m.recipients.map((r) => r.id);
  new QueueClaimer(store.sqlite, () => NOW).claim(10, 60_000);
  settler = new QueueSettler(store.sqlite, events);
});

afterEach(() => {
  store.close();
  dir.cleanup();
});

const rowOf = (id: RecipientId) => store.sqlite.query("SELECT status, attempts, next_attempt_at, lease_until FROM recipients WHERE id = ?").get(id);
const eventsOf = (id: RecipientId) =>
  store.sqlite.query("SELECT type, time, message_id IS NOT NULL AS has_message, recipient, user_id, details FROM events WHERE recipient_id = ? AND type != 'queued'").all(id);
const info = { reply: "250 ok", status: "2.0.0", mx: "mx.d.test" };

describe("settling a recipient", () => {
  test("delivered, deferred and bounced each change the row and write one event with the owner, address and details", () => {
    settler.transaction(() => {
      settler.markDelivered(settler.pendingRecipient(ids[0]!)!, info, NOW + 1);
      settler.markDeferred(settler.pendingRecipient(ids[1]!)!, { reply: "451 4.3.0 later", status: "4.3.0" }, NOW + 60_000, NOW + 1);
      settler.markBounced(settler.pendingRecipient(ids[2]!)!, { reply: "550 5.1.1 unknown", status: "5.1.1", mx: "mx.d.test" }, NOW + 1);
    });
    expect(rowOf(ids[0]!)).toEqual({ status: "delivered", attempts: 1, next_attempt_at: NOW + 60_000, lease_until: null });
    expect(rowOf(ids[1]!)).toEqual({ status: "deferred", attempts: 1, next_attempt_at: NOW + 60_000, lease_until: null });
    expect(rowOf(ids[2]!)).toEqual({ status: "bounced", attempts: 1, next_attempt_at: NOW + 60_000, lease_until: null });
    expect(eventsOf(ids[0]!)).toEqual([
      { type: "delivered", time: NOW + 1, has_message: 1, recipient: "a@d.test", user_id: 7, details: JSON.stringify({ mx: "mx.d.test", reply: "250 ok", status: "2.0.0", attempts: 1 }) },
    ]);
    expect(JSON.parse((eventsOf(ids[1]!)[0] as { details: string }).details)).toEqual({
      reply: "451 4.3.0 later", status: "4.3.0", attempts: 1, next_attempt_at: new Date(NOW + 60_000).toISOString(),
    });
    expect(eventsOf(ids[2]!)).toHaveLength(1);
  });

  test("a bounced event also queues its webhook delivery in the same transaction", () => {
    settler.transaction(() => settler.markBounced(settler.pendingRecipient(ids[2]!)!, info, NOW));
    const n = store.sqlite.query("SELECT count(*) AS n FROM webhook_outbox").get() as { n: number };
    expect(n.n).toBe(1);
  });

  test("a recipient that is no longer pending is not found, and marking it again changes nothing", () => {
    const rec = settler.pendingRecipient(ids[0]!)!;
    settler.transaction(() => settler.markDelivered(rec, info, NOW));
    expect(settler.pendingRecipient(ids[0]!)).toBeNull();
    expect(settler.transaction(() => settler.markBounced(rec, info, NOW))).toBe(false);
    expect(settler.transaction(() => settler.markDeferred(rec, info, NOW, NOW))).toBe(false);
    expect((rowOf(ids[0]!) as { status: string }).status).toBe("delivered");
    expect(eventsOf(ids[0]!)).toHaveLength(1);
  });

  test("a state change whose event cannot be written is rolled back with it", () => {
    store.sqlite.run("CREATE TRIGGER no_events BEFORE INSERT ON events WHEN NEW.type = 'delivered' BEGIN SELECT RAISE(ABORT, 'events unavailable'); END");
    expect(() => settler.transaction(() => settler.markDelivered(settler.pendingRecipient(ids[0]!)!, info, NOW))).toThrow("events unavailable");
    expect((rowOf(ids[0]!) as { status: string }).status).toBe("queued");
  });
});
