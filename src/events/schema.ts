/** @module events/schema — the event log and the webhook outbox (owned by events/). */
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
  },
  (t) => [index("events_message").on(t.messageId), index("events_user").on(t.userId, t.id)],
);

export const webhookOutbox = sqliteTable(
  "webhook_outbox",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    eventId: integer("event_id").notNull(),
    url: text("url").notNull(),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: integer("next_attempt_at").notNull(),
    createdAt: integer("created_at").notNull(),
    /** null while pending; "delivered" or "expired" when finished */
    state: text("state"),
    lastError: text("last_error"),
  },
  (t) => [index("webhook_outbox_due").on(t.nextAttemptAt)],
);
