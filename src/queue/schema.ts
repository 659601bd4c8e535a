/** @module queue/schema — messages and their per-recipient delivery state (owned by queue/). */
import { sqliteTable, integer, text, blob, index, uniqueIndex } from "drizzle-orm/sqlite-core";
import { sql } from "drizzle-orm";

export const messages = sqliteTable(
  "messages",
  {
    id: text("id").primaryKey(),
    /** owner (SMTP user or API key's user); null for trusted-network or system mail (DSNs) */
    userId: integer("user_id"),
    createdAt: integer("created_at").notNull(),
    /** MAIL FROM; "" is the null sender <> */
    envelopeFrom: text("envelope_from").notNull(),
    subject: text("subject").notNull().default(""),
    size: integer("size").notNull(),
    /** the prepared MIME message (CRLF line ends), stored once for all recipients */
    body: blob("body", { mode: "buffer" }).notNull(),
    /** "smtp" | "api" | "dsn" */
    source: text("source").notNull(),
    inlineCss: integer("inline_css", { mode: "boolean" }).notNull().default(false),
    trackClicks: integer("track_clicks", { mode: "boolean" }).notNull().default(false),
    trackOpens: integer("track_opens", { mode: "boolean" }).notNull().default(false),
    trackBounces: integer("track_bounces", { mode: "boolean" }).notNull().default(false),
    /** List-Unsubscribe (one-click, RFC 8058) added per recipient */
    unsubscribe: integer("unsubscribe", { mode: "boolean" }).notNull().default(false),
    idempotencyKey: text("idempotency_key"),
    /** the Message-ID field's `<id@host>`: finds the message a returned report names (bounce/ingest.ts) */
    messageIdHeader: text("message_id_header"),
    /** SHA-256 (hex) of the normalised submission that took the key: a repeat with another payload is refused */
    idempotencyHash: text("idempotency_hash"),
    /** the sender's label (POST /v1/send `tag`, SMTP `X-Outpost-Tag`), carried by every event of the message */
    tag: text("tag"),
    /** JSON object of strings (`metadata`, `X-Outpost-Metadata-KEY`), carried by every event; null when none */
    metadata: text("metadata"),
    /** set once the sender was told the message is delayed (delivery.delay_warning): one warning per message */
    delayWarned: integer("delay_warned", { mode: "boolean" }).notNull().default(false),
    /** a large body is kept in a body file instead of `body` (then empty): the file's number (body_files.id)… */
    bodyFile: integer("body_file"),
    /** …and where in that file it starts; `size` bytes long (queue/bodies.ts) */
    bodyOffset: integer("body_offset"),
  },
  (t) => [
    // a body file is removed once no message names it
    index("messages_body_file").on(t.bodyFile).where(sql`body_file IS NOT NULL`),
    // GET /v1/messages: a user's messages newest first, by keyset (created_at, id); with a tag, that tag's only
    index("messages_user_created").on(t.userId, t.createdAt, t.id),
    index("messages_user_tag")
      .on(t.userId, t.tag, t.createdAt, t.id)
      .where(sql`tag IS NOT NULL`),
    uniqueIndex("messages_idempotency").on(t.userId, t.idempotencyKey).where(sql`idempotency_key IS NOT NULL`),
    index("messages_message_id_header").on(t.messageIdHeader).where(sql`message_id_header IS NOT NULL`),
  ],
);

/** The body files (queue/bodies.ts): listed before a message may name one, unlisted when removed. */
export const bodyFiles = sqliteTable("body_files", {
  id: integer("id").primaryKey(),
  createdAt: integer("created_at").notNull(),
  /** no longer written, and every row naming it committed: only then may it be removed when no message names it */
  sealed: integer("sealed", { mode: "boolean" }).notNull().default(false),
});

export const recipients = sqliteTable(
  "recipients",
  {
    id: text("id").primaryKey(),
    messageId: text("message_id")
      .notNull()
      .references(() => messages.id, { onDelete: "cascade" }),
    address: text("address").notNull(),
    /** mail/address.ts addressKey of `address`: what GET /v1/messages?recipient= matches */
    addressKey: text("address_key").notNull().default(""),
    /** lower-cased domain part: what routing and throttling key on */
    domain: text("domain").notNull(),
    /** queued | deferred | held | delivered | bounced | suppressed (held: an operator stopped it, `outpost queue hold`) */
    status: text("status").notNull(),
    attempts: integer("attempts").notNull().default(0),
    /** ms since epoch; due when <= now and status is queued/deferred */
    nextAttemptAt: integer("next_attempt_at").notNull(),
    /** ms since epoch; a claimed recipient is invisible to other claims until then (crash safety) */
    leaseUntil: integer("lease_until"),
    lastReply: text("last_reply"),
    lastStatus: text("last_status"),
    lastMx: text("last_mx"),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    index("recipients_message").on(t.messageId),
    index("recipients_address").on(t.addressKey, t.messageId),
    // only pending rows are indexed, so finished mail never slows a look at the queue (next due, depth, flush).
    // First attempts and retries have separate indexes, so a retry backlog never stands in front of new mail
    // (Postfix qmgr: deferred mail must not slow down new mail); what needs both reads both (queue/pending.ts)
    index("recipients_new")
      .on(t.nextAttemptAt)
      .where(sql`status = 'queued'`),
    index("recipients_retry")
      .on(t.nextAttemptAt)
      .where(sql`status = 'deferred'`),
    // one domain's pending rows in time order: lets a claim step from domain to domain past a backlog it has
    // excluded (queue/claim.ts), instead of waiting behind it
    index("recipients_domain")
      .on(t.domain, t.nextAttemptAt)
      .where(sql`status IN ('queued','deferred')`),
    // message ids are time-ordered (mail/ids.ts), so the least of them names the oldest message still waiting:
    // /metrics reads its age from one index seek, however long the queue or its finished history
    index("recipients_pending_message")
      .on(t.messageId)
      .where(sql`status IN ('queued','deferred')`),
    // held rows are in none of the indexes above, so no claim ever sees them; this one lets `queue list` and
    // `queue release --all` find them without reading the finished rows
    index("recipients_held")
      .on(t.nextAttemptAt)
      .where(sql`status = 'held'`),
  ],
);
