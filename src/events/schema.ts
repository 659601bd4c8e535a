/** @module events/schema — the event log and the webhook outbox (owned by events/). */
import { sql } from "drizzle-orm";
import { sqliteTable, integer, text, index } from "drizzle-orm/sqlite-core";

export const events = sqliteTable(
  "events",
  {
    /** monotonic: the cursor for /v1/events */
    id: integer("id").primaryKey({ autoIncrement: true }),
    type: text("type").notNull(),
    time: integer("time").notNull(),
    messageId: text("message_id").notNull(),
    recipientId: text("recipient_id"),
    recipient: text("recipient"),
    userId: integer("user_id"),
    /** JSON object: mx, reply, status, url, user_agent … */
    details: text("details").notNull().default("{}"),
    /** the message's tag and metadata (JSON) when it was recorded: an event says whose it is without the message */
    tag: text("tag"),
    metadata: text("metadata"),
  },
  (t) => [index("events_message").on(t.messageId), index("events_user").on(t.userId, t.id)],
);

/**
 * One row per (event, `[[webhook]]`) to POST, written in the event's transaction (events/record.ts) and worked off by
 * events/webhooks.ts. A row is pending while `state` is null; `lease_until` marks it in flight (a dead process's
 * leases run out, or are cleared at the next start). Finished rows are deleted after `webhook_retention`.
 */
export const webhookOutbox = sqliteTable(
  "webhook_outbox",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    eventId: integer("event_id").notNull(),
    /** the `[[webhook]]` name; "" in rows written before hooks had names (adopted by URL at start) */
    hook: text("hook").notNull().default(""),
    /** the event's message: a hook gets one message's events in order */
    messageId: text("message_id").notNull().default(""),
    /** the hook's URL when the event was recorded (it is POSTed to the hook's URL at the time of sending) */
    url: text("url").notNull(),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: integer("next_attempt_at").notNull(),
    /** when the row's 24 h window began: the event's recording, or a `webhook retry` of a finished row */
    createdAt: integer("created_at").notNull(),
    leaseUntil: integer("lease_until"),
    /** null while pending; "delivered", "expired" (no 2xx within 24 h) or "orphaned" (its hook left the config) */
    state: text("state"),
    lastError: text("last_error"),
    lastAttemptAt: integer("last_attempt_at"),
    /** the first failed attempt since the row was (re)started: `webhook list`'s "failing since" */
    failedAt: integer("failed_at"),
    finishedAt: integer("finished_at"),
  },
  (t) => [
    index("webhook_outbox_due").on(t.hook, t.nextAttemptAt).where(sql`state IS NULL`),
    index("webhook_outbox_order").on(t.hook, t.messageId, t.id).where(sql`state IS NULL`),
    index("webhook_outbox_finished").on(t.finishedAt).where(sql`state IS NOT NULL`),
  ],
);
