import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore } from "../db/client.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { EventRecorder } from "./record.ts";
import { EventQuery, parseCursor, renderEvent } from "./query.ts";

const dir = tempDir();
const store = openStore(join(dir.path, "q.db"));
afterAll(() => {
  store.close();
  dir.cleanup();
});
const rec = new EventRecorder(store.sqlite);
const q = new EventQuery(store.sqlite);
const u1 = 1 as UserId;
const u2 = 2 as UserId;
const m = "m1" as MessageId;
rec.record({ type: "queued", messageId: m, recipientId: "r1" as RecipientId, recipient: "a@x.org", userId: u1, time: 1_700_000_000_000 });
rec.record({ type: "queued", messageId: "m2" as MessageId, recipientId: "r9" as RecipientId, recipient: "z@x.org", userId: u2 });
rec.record({ type: "delivered", messageId: m, recipientId: "r1" as RecipientId, recipient: "a@x.org", userId: u1, details: { reply: "250 ok" } });
rec.record({ type: "queued", messageId: m, recipientId: "r2" as RecipientId, recipient: "b@x.org", userId: u1 });

describe("EventQuery", () => {
  test("pages a user's events oldest first and skips other users'", () => {
    const p1 = q.pageFor({ userId: u1, since: "", types: [], limit: 2 });
    expect(p1.events.map((e) => e.type)).toEqual(["queued", "delivered"]);
    const p2 = q.pageFor({ userId: u1, since: p1.nextCursor, types: [], limit: 2 });
    expect(p2.events.map((e) => e.recipient)).toEqual(["b@x.org"]);
    const p3 = q.pageFor({ userId: u1, since: p2.nextCursor, types: [], limit: 2 });
    expect(p3).toEqual({ events: [], nextCursor: p2.nextCursor });
  });

  test("filters by type", () => {
    expect(q.pageFor({ userId: u1, since: "0", types: ["delivered"], limit: 10 }).events.map((e) => e.details)).toEqual([{ reply: "250 ok" }]);
  });

  test("groups a message's history by recipient", () => {
    const h = q.historyOf(m);
    expect(h.get("r1")!.map((e) => e.type)).toEqual(["queued", "delivered"]);
    expect(h.get("r2")!.length).toBe(1);
  });

  test("renders time as RFC 3339 UTC and survives bad details JSON", () => {
    const row = { id: 7, type: "queued", time: 0, message_id: "m", recipient_id: null, recipient: null, details: "{bad", tag: null, metadata: null };
    expect(renderEvent(row)).toEqual({
      id: "7",
      type: "queued",
      time: "1970-01-01T00:00:00.000Z",
      message_id: "m",
      recipient: null,
      tag: null,
      metadata: {},
      details: {},
    });
  });

  test("an event carries the tag and metadata it was recorded with", () => {
    const labels = { tag: "welcome", metadata: JSON.stringify({ order_id: "42" }) };
    rec.record({ type: "queued", messageId: "m3" as MessageId, recipientId: "r3" as RecipientId, recipient: "c@x.org", userId: u2, labels });
    const page = q.pageFor({ userId: u2, since: "", types: [], limit: 10 });
    expect(page.events.map((e) => [e.message_id, e.tag, e.metadata])).toEqual([
      ["m2", null, {}],
      ["m3", "welcome", { order_id: "42" }],
    ]);
  });

  test("filters by message id, alone and with a type, and only among the user's events", () => {
    expect(q.pageFor({ userId: u1, since: "", types: [], messageId: m, limit: 10 }).events.map((e) => e.type)).toEqual(["queued", "delivered", "queued"]);
    expect(q.pageFor({ userId: u1, since: "", types: ["delivered"], messageId: m, limit: 10 }).events.length).toBe(1);
    expect(q.pageFor({ userId: u1, since: "", types: [], messageId: "m2", limit: 10 }).events).toEqual([]);
  });

  test("accepts only decimal cursors", () => {
    expect(parseCursor("")).toBe(0);
    expect(parseCursor("42")).toBe(42);
    expect(parseCursor("-1")).toBeNull();
    expect(parseCursor("4e3")).toBeNull();
    expect(() => q.pageFor({ userId: u1, since: "x", types: [], limit: 1 })).toThrow(RangeError);
  });
});
