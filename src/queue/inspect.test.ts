import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import type { UserId } from "../mail/ids.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { Enqueuer, type NewMessage } from "./enqueue.ts";
import { listQuery, QueueInspector, type MessageFilter } from "./inspect.ts";

const dir = tempDir();
const store = openStore(join(dir.path, "q.db"));
afterAll(() => {
  store.close();
  dir.cleanup();
});

const user = 3 as UserId;
const after = { createdAt: 1_700_000_000_000, id: "01zzzzzzzzzzzzzzzzzz" };
const FILTERS: [string, MessageFilter][] = [
  ["no filter", { userId: user, limit: 50 }],
  ["a cursor", { userId: user, limit: 50, after }],
  ["a tag and a cursor", { userId: user, limit: 50, tag: "welcome", after }],
  ["since and until", { userId: user, limit: 50, since: 1, until: 2 }],
  ["a status", { userId: user, limit: 50, status: "bounced" }],
  ["deferred (held included)", { userId: user, limit: 50, status: "deferred" }],
  ["a recipient", { userId: user, limit: 50, recipientKey: "ann@example.org" }],
  ["everything", { userId: user, limit: 50, tag: "t", status: "queued", recipientKey: "a@x.org", since: 1, until: 2, after }],
];

describe("listQuery: a user's page never reads the whole messages table", () => {
  for (const [what, filter] of FILTERS) {
    test(`with ${what}, messages are searched through an index that ends in the sort order`, () => {
      const { sql, args } = listQuery(filter);
      const plan = store.sqlite.query<{ detail: string }, (string | number)[]>(`EXPLAIN QUERY PLAN ${sql}`).all(...args).map((r) => r.detail);
      const onMessages = plan.filter((d) => / m\b/.test(d));
      expect(onMessages).toHaveLength(1);
      expect(onMessages[0]).toMatch(filter.tag === undefined ? /^SEARCH m USING INDEX messages_user_created \(user_id=\?/ : /^SEARCH m USING INDEX messages_user_tag \(user_id=\? AND tag=\?/);
      expect(plan.join("\n")).not.toMatch(/^SCAN|TEMP B-TREE/m);
    });
  }
});

describe("QueueInspector.listMessages", () => {
  const events = new EventRecorder(store.sqlite);
  let clock = 1_000;
  const enqueuer = new Enqueuer(store.sqlite, events, () => clock);
  const inspector = new QueueInspector(store.sqlite);
  const message = (recipients: string[], tag?: string): NewMessage => ({
    userId: user, envelopeFrom: "a@example.com", recipients, suppressed: new Set(), body: Buffer.from("Subject: x\r\n\r\nx\r\n"),
    subject: "x", source: "api", tag, options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
  });

  test("pages newest first by (created_at, id), ties within one millisecond included", async () => {
    const first = await enqueuer.enqueue(message(["a@x.org"]));
    const second = await enqueuer.enqueue(message(["b@x.org"]));
    clock = 2_000;
    const third = await enqueuer.enqueue(message(["c@x.org"], "t"));
    const p1 = inspector.listMessages({ userId: user, limit: 2 });
    expect(p1.messages.map((m) => m.id)).toEqual([third.id, second.id]);
    expect(p1.more).toBe(true);
    const last = p1.messages[1]!;
    const p2 = inspector.listMessages({ userId: user, limit: 2, after: { createdAt: last.createdAt, id: last.id } });
    expect(p2).toMatchObject({ messages: [{ id: first.id }], more: false });
    expect(inspector.listMessages({ userId: user, limit: 5, recipientKey: "c@x.org" }).messages.map((m) => m.tag)).toEqual(["t"]);
    expect(inspector.listMessages({ userId: 4 as UserId, limit: 5 }).messages).toEqual([]);
  });
});
