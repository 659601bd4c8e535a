import { beforeEach, expect, test } from "bun:test";
import { EventRecorder } from "../events/record.ts";
import type { MessageId } from "../mail/ids.ts";
import { OPTIONS_OFF, storeEachTest } from "../../test/helpers/harness.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer } from "./enqueue.ts";
import { RecentBodies, recentBodies, type HandedOver } from "./handoff.ts";


const store = storeEachTest();
let enqueuer: Enqueuer;
let claimer: QueueClaimer;

beforeEach(() => {
  enqueuer = new Enqueuer(store().sqlite, new EventRecorder(store().sqlite));
  claimer = new QueueClaimer(store().sqlite);
});

/** A 50 KiB message with dotted lines, as intake stores it. */
function largeBody(): Buffer {
  return Buffer.from("Subject: big\r\nMessage-ID: <big@example.org>\r\n\r\n" + ".a dotted line\r\n".repeat(3200));
}

function enqueue(body: Buffer, options = OPTIONS_OFF, suppressed: ReadonlySet<string> = new Set()) {
  return enqueuer.enqueue({
    userId: null,
    envelopeFrom: "sender@example.org",
    recipients: ["a@one.test"],
    suppressed,
    body,
    subject: "big",
    messageIdHeader: "<big@example.org>",
    source: "smtp",
    options,
  });
}

function handed(bytes: number): HandedOver {
  return { body: Buffer.alloc(bytes), options: OPTIONS_OFF, messageIdHeader: null };
}

test("delivery loads a message just committed with the very body intake stored, not a copy read back", async () => {
  const body = largeBody();
  const options = { ...OPTIONS_OFF, trackBounces: true };
  const queued = await enqueue(body, options);
  const msg = claimer.loadMessage(queued.id)!;
  expect(msg.body).toBe(body);
  // the rest as the row holds it
  expect(msg).toMatchObject({ id: queued.id, envelopeFrom: "sender@example.org", options, messageIdHeader: "<big@example.org>", userId: null });
  expect(msg.createdAt).toBeGreaterThan(0);
});

test("a message with no recipient to deliver to (all suppressed) is not handed over: no claim would take it", async () => {
  const queued = await enqueue(largeBody(), OPTIONS_OFF, new Set(["a@one.test"]));
  expect(queued.recipients.map((r) => r.status)).toEqual(["suppressed"]);
  expect(recentBodies.take(queued.id, largeBody().length)).toBeUndefined();
  // the same message with its recipient queued is
  const delivered = await enqueue(largeBody());
  expect(recentBodies.take(delivered.id, largeBody().length)?.body.equals(largeBody())).toBe(true);
});

test("a small body inside a large buffer is handed over as a copy of its own, so it does not keep the buffer alive", async () => {
  // as SMTP intake makes it: a 2 KiB message at the start of a 64 KiB receive buffer
  const receive = Buffer.alloc(64 * 1024, 0x41);
  const body = receive.subarray(0, 2048);
  body.write("Subject: small\r\n\r\n");
  const queued = await enqueue(body);
  const msg = claimer.loadMessage(queued.id)!;
  expect(msg.body.equals(body)).toBe(true);
  expect(msg.body.buffer).not.toBe(receive.buffer);
  expect(msg.body.buffer.byteLength).toBe(2048);
});

test("a message not in the hand-over (taken already) is read from the store, byte for byte", async () => {
  const body = largeBody();
  const queued = await enqueue(body);
  const first = claimer.loadMessage(queued.id)!;
  const second = claimer.loadMessage(queued.id)!;
  expect(second.body).not.toBe(first.body);
  expect(second.body.equals(body)).toBe(true);
  expect(second).toEqual({ ...first, body: second.body });
});

test("a stored body that is not the one handed over is read from the store, never taken stale", async () => {
  const queued = await enqueue(largeBody());
  const changed = Buffer.from("Subject: other\r\n\r\nnot the same length\r\n");
  store().sqlite.run("UPDATE messages SET body = ?, size = ? WHERE id = ?", [changed, changed.length, queued.id]);
  expect(claimer.loadMessage(queued.id)!.body.equals(changed)).toBe(true);
});

test("a message deleted after its commit is not loaded from the hand-over", async () => {
  const queued = await enqueue(largeBody());
  store().sqlite.run("DELETE FROM messages WHERE id = ?", [queued.id]);
  expect(claimer.loadMessage(queued.id)).toBeNull();
});

test("the hand-over is bounded in bytes: the oldest bodies leave first, and one body may not take more than a quarter", () => {
  const map = new RecentBodies(4096);
  const id = (n: number) => `m${n}` as MessageId;
  for (let n = 1; n <= 5; n++) map.put(id(n), handed(1000));
  expect(map.bytes).toBeLessThanOrEqual(4096);
  expect(map.size).toBe(4);
  expect(map.take(id(1), 1000)).toBeUndefined();
  expect(map.take(id(5), 1000)?.body.length).toBe(1000);
  map.put(id(6), handed(1025));
  expect(map.take(id(6), 1025)).toBeUndefined();
});

test("the hand-over counts a body by the allocation it keeps alive, not by its own length", () => {
  const map = new RecentBodies(1_000_000);
  const received = Buffer.alloc(72 * 1024).subarray(8192, 8192 + 100);
  map.put("m1" as MessageId, { body: received, options: OPTIONS_OFF, messageIdHeader: null });
  expect(map.bytes).toBe(72 * 1024);
  expect(map.take("m1" as MessageId, 100)!.body).toBe(received);
  expect(map.bytes).toBe(0);
});

test("a body is taken once, and only with the stored length", () => {
  const map = new RecentBodies();
  map.put("m1" as MessageId, handed(10));
  expect(map.take("m1" as MessageId, 11)).toBeUndefined();
  expect(map.take("m1" as MessageId, 10)).toBeUndefined();
  map.put("m2" as MessageId, handed(10));
  expect(map.take("m2" as MessageId, 10)).toBeDefined();
  expect(map.take("m2" as MessageId, 10)).toBeUndefined();
  expect(map.size).toBe(0);
});
