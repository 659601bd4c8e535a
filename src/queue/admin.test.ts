import { afterEach, beforeEach, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import type { MessageId } from "../mail/ids.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { QueueAdmin } from "./admin.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer } from "./enqueue.ts";
import { QueueInspector } from "./inspect.ts";

let dir: ReturnType<typeof tempDir>;
let store: Store;
let clock: number;
let id: MessageId;

beforeEach(async () => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  clock = 1_000_000;
  const m = await new Enqueuer(store.sqlite, new EventRecorder(store.sqlite), () => clock).enqueue({
    userId: null, envelopeFrom: "s@example.org", recipients: ["a@d.test", "b@d.test"], suppressed: new Set(),
    body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "smtp",
    options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false },
  });
  id = m.id;
});

afterEach(() => {
  store.close();
  dir.cleanup();
});

test("retry leaves a recipient that is in flight alone, so it cannot be claimed twice", () => {
  const claimer = new QueueClaimer(store.sqlite, () => clock);
  const [inFlight] = claimer.claim(1, 60_000);
  store.sqlite.run("UPDATE recipients SET status = 'deferred', next_attempt_at = ? WHERE id != ?", [clock + 3_600_000, inFlight!.id]);
  const admin = new QueueAdmin(store.sqlite, () => clock);
  expect(admin.retry(id)).toBe(1);
  expect(admin.retryAll()).toBe(0);
  const again = claimer.claim(10, 60_000);
  expect(again.map((r) => r.id)).not.toContain(inFlight!.id);
  expect(again).toHaveLength(1);
});

test("the listing (queue list) shows only pending recipients and a message (queue show) shows them all", () => {
  store.sqlite.run("UPDATE recipients SET status = 'delivered' WHERE address = 'a@d.test'");
  const inspector = new QueueInspector(store.sqlite);
  expect([...inspector.pending()][0]!.recipients.map((r) => r.address)).toEqual(["b@d.test"]);
  expect(inspector.getMessage(id)!.recipients.map((r) => r.status)).toEqual(["delivered", "queued"]);
});

test("delete removes the message and every recipient row, and returns false the second time", () => {
  const admin = new QueueAdmin(store.sqlite, () => clock);
  expect(admin.delete(id)).toBe(true);
  expect(store.sqlite.query("SELECT count(*) AS n FROM recipients").get()).toEqual({ n: 0 });
  expect(admin.delete(id)).toBe(false);
  expect(admin.retry(id)).toBeNull();
});
