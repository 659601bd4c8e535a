import { beforeEach, expect, test } from "bun:test";
import { EventRecorder } from "../events/record.ts";
import { messageIdsFrom, newMessageId } from "../mail/ids.ts";
import { OPTIONS_OFF, storeEachTest } from "../../test/helpers/harness.ts";
import { pastEveryId } from "../../test/helpers/ids.ts";
import { QueueClaimer } from "./claim.ts";
import { Enqueuer } from "./enqueue.ts";

const DAY = 24 * 3600_000;
const store = storeEachTest();
let clock: number;
let enqueuer: Enqueuer;
let claimer: QueueClaimer;

beforeEach(() => {
  clock = pastEveryId();
  enqueuer = new Enqueuer(store().sqlite, new EventRecorder(store().sqlite), () => clock);
  claimer = new QueueClaimer(store().sqlite, () => clock);
});

function enqueue(recipients: string[]) {
  return enqueuer.enqueue({
    userId: null, envelopeFrom: "sender@example.org", recipients, suppressed: new Set(), body: Buffer.from("Subject: hi\r\n\r\nhello\r\n"),
    subject: "hi", source: "smtp", options: OPTIONS_OFF,
  });
}

const leaseOf = (address: string) =>
  (store().sqlite.query("SELECT lease_until AS l FROM recipients WHERE address = ?").get(address) as { l: number | null }).l;

test("message ids made before a time sort below messageIdsFrom(time), those made at it or later above", () => {
  const t = clock;
  expect(newMessageId(t - 1) < messageIdsFrom(t)).toBe(true);
  expect(newMessageId(t) < messageIdsFrom(t)).toBe(false);
  expect(newMessageId(t + 1) < messageIdsFrom(t)).toBe(false);
});

test("leases the pending recipients at the given domains of messages made before the cutoff, and nothing else", async () => {
  await enqueue(["old1@dead.test", "old@alive.test"]);
  await enqueue(["old2@dead.test"]);
  clock += 2 * DAY;
  await enqueue(["young@dead.test"]);
  const batch = claimer.claimExpired(["dead.test"], clock - DAY, 100, 60_000);
  expect(batch.more).toBe(false);
  expect(batch.recipients.map((r) => r.address).sort()).toEqual(["old1@dead.test", "old2@dead.test"]);
  expect(leaseOf("old1@dead.test")).toBe(clock + 60_000);
  expect(leaseOf("old@alive.test")).toBeNull();
  expect(leaseOf("young@dead.test")).toBeNull();
  // leased now: a second look finds nothing
  expect(claimer.claimExpired(["dead.test"], clock - DAY, 100, 60_000).recipients).toEqual([]);
});

test("a recipient leased by a claim is left alone", async () => {
  await enqueue(["a@dead.test"]);
  await enqueue(["b@dead.test"]);
  const claimed = claimer.claim(1, 10 * DAY);
  const until = clock + 10 * DAY;
  clock += 2 * DAY;
  const batch = claimer.claimExpired(["dead.test"], clock - DAY, 100, 60_000);
  expect(batch.recipients.map((r) => r.address)).toEqual(claimed[0]!.address === "a@dead.test" ? ["b@dead.test"] : ["a@dead.test"]);
  expect(leaseOf(claimed[0]!.address)).toBe(until);
});

test("a full batch ends at a message boundary, so a message's recipients are settled together", async () => {
  await enqueue(["a1@dead.test", "a2@dead.test", "a3@dead.test"]);
  await enqueue(["b1@dead.test", "b2@dead.test", "b3@dead.test"]);
  clock += 2 * DAY;
  const first = claimer.claimExpired(["dead.test"], clock - DAY, 4, 60_000);
  expect(first).toMatchObject({ more: true });
  expect(first.recipients.map((r) => r.address).sort()).toEqual(["a1@dead.test", "a2@dead.test", "a3@dead.test"]);
  const second = claimer.claimExpired(["dead.test"], clock - DAY, 4, 60_000);
  expect(second.recipients.map((r) => r.address).sort()).toEqual(["b1@dead.test", "b2@dead.test", "b3@dead.test"]);
  expect(second.more).toBe(false);
});
