import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { newMessageId, type MessageId, type RecipientId, type UserId } from "../mail/ids.ts";
import { createLogger } from "../observe/log.ts";
import { removeSuppression, SuppressionWriter, getSuppression } from "../suppression/list.ts";
import { TrackingRecorder } from "../tracking/record.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { Engagement } from "./engagement.ts";
import { Enqueuer } from "./enqueue.ts";

let dir: ReturnType<typeof tempDir>;
let store: Store;
let recorder: TrackingRecorder;
let logs: Record<string, unknown>[];
let message: MessageId;
let ids: RecipientId[];
const NOW = 1_700_000_000_000;
const OWNER = 7 as UserId;
const client = { ip: "203.0.113.9", userAgent: "UA/1" };

beforeEach(async () => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  const events = new EventRecorder(store.sqlite, [{ name: "app", url: "http://127.0.0.1:9/hook", events: ["clicked", "unsubscribed"], userId: null, secret: "s" }]);
  const m = await new Enqueuer(store.sqlite, events, () => NOW).enqueue({
    userId: OWNER, envelopeFrom: "s@example.org", recipients: ["a@d.test", "B@D.test"], suppressed: new Set(),
    body: Buffer.from("Subject: x\r\n\r\nx\r\n"), subject: "x", source: "api",
    options: { inlineCss: false, trackClicks: true, trackOpens: true, trackBounces: false, unsubscribe: true },
  });
  message = m.id;
  ids = m.recipients.map((r) => r.id);
  logs = [];
  recorder = new TrackingRecorder({
    store: new Engagement(store.sqlite, events),
    suppressions: new SuppressionWriter(store.sqlite),
    transaction: (fn) => store.sqlite.transaction(fn).immediate(),
    log: createLogger("info", (l) => logs.push(JSON.parse(l))),
    userName: (id) => (id === OWNER ? "owner" : null),
    now: () => NOW + 1000,
  });
});

afterEach(() => {
  store.close();
  dir.cleanup();
});

const eventsOf = (id: RecipientId) =>
  store.sqlite.query<{ type: string; user_id: number; recipient: string; details: string }, [string]>(
    "SELECT type, user_id, recipient, details FROM events WHERE recipient_id = ? AND type != 'queued' ORDER BY id",
  ).all(id);
const outbox = () => store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM webhook_outbox").get()!.n;

describe("tracking hits on recipient rows", () => {
  test("a click is the recipient's event, owned by the message's user, with a webhook row", () => {
    const out = recorder.click({ messageId: message, recipientId: ids[0]!, index: 2, url: "https://x.example/?a=1&b=2" }, client);
    expect(out?.recipient).toMatchObject({ id: ids[0]!, messageId: message, address: "a@d.test", userId: OWNER });
    expect(eventsOf(ids[0]!)).toEqual([{ type: "clicked", user_id: OWNER, recipient: "a@d.test",
      details: JSON.stringify({ url: "https://x.example/?a=1&b=2", link_index: 2, user_agent: "UA/1", client_ip: "203.0.113.9" }) }]);
    expect(outbox()).toBe(1);
    expect(logs).toEqual([expect.objectContaining({ event: "tracking", type: "clicked", queue_id: message, recipient_id: ids[0], user: "owner" })]);
  });

  test("a token whose recipient is gone or belongs to another message records nothing", () => {
    expect(recorder.open({ messageId: newMessageId(), recipientId: ids[0]! }, client)).toBeNull();
    expect(recorder.open({ messageId: message, recipientId: "r0000000000000000000z" as RecipientId }, client)).toBeNull();
    expect(recorder.unsubscribe({ messageId: newMessageId(), recipientId: ids[0]! }, client)).toBeNull();
    expect(eventsOf(ids[0]!)).toEqual([]);
    expect(getSuppression(store.db, OWNER, "a@d.test")).toBeNull();
  });

  test("an unsubscribe lists the address for the owner and is recorded once per recipient", () => {
    const first = recorder.unsubscribe({ messageId: message, recipientId: ids[1]! }, client);
    expect(first).toMatchObject({ recorded: true, suppressed: true });
    expect(getSuppression(store.db, OWNER, "b@d.test")?.reason).toBe("unsubscribe");
    expect(getSuppression(store.db, null, "b@d.test")).toBeNull();
    expect(recorder.unsubscribe({ messageId: message, recipientId: ids[1]! }, client)).toMatchObject({ recorded: false, suppressed: false });
    // taken off the list by its user, the same link lists it again, without a second event
    removeSuppression(store.db, OWNER, "b@d.test", "keep");
    expect(recorder.unsubscribe({ messageId: message, recipientId: ids[1]! }, client)).toMatchObject({ recorded: false, suppressed: true });
    expect(eventsOf(ids[1]!).map((e) => e.type)).toEqual(["unsubscribed"]);
    expect(logs.filter((l) => l.type === "unsubscribed")).toHaveLength(1);
  });

  test("the suppression and the event commit together, or neither does", () => {
    store.sqlite.run("CREATE TRIGGER no_events BEFORE INSERT ON events WHEN NEW.type = 'unsubscribed' BEGIN SELECT RAISE(ABORT, 'disk says no'); END");
    expect(() => recorder.unsubscribe({ messageId: message, recipientId: ids[0]! }, client)).toThrow(/disk says no/);
    expect(getSuppression(store.db, OWNER, "a@d.test")).toBeNull();
    expect(logs).toEqual([]);
  });
});
