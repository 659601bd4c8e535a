/**
 * @module queue/inspect — read-only views of the queue: one message with its recipients, the message an
 * idempotency key names, and the queue depth; and the one JSON rendering of a message. Never writes; the API and
 * `outpost queue list|show` read through here.
 */
import type { Database, Statement } from "bun:sqlite";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { MessageOptions, MessageSource, RecipientStatus } from "./enqueue.ts";

export interface RecipientView {
  id: RecipientId;
  address: string;
  status: RecipientStatus;
  attempts: number;
  /** ms since epoch; meaningful for queued/deferred */
  nextAttemptAt: number;
  /** ms since epoch while a delivery attempt holds it, else null */
  leasedUntil: number | null;
  lastReply: string | null;
  lastStatus: string | null;
  lastMx: string | null;
  updatedAt: number;
}

export interface MessageView {
  id: MessageId;
  userId: UserId | null;
  /** ms since epoch */
  createdAt: number;
  envelopeFrom: string;
  subject: string;
  size: number;
  source: MessageSource;
  options: MessageOptions;
  recipients: RecipientView[];
}

interface MessageRow {
  id: string;
  user_id: number | null;
  created_at: number;
  envelope_from: string;
  subject: string;
  size: number;
  source: string;
  inline_css: number;
  track_clicks: number;
  track_opens: number;
  track_bounces: number;
}

interface RecipientRow {
  id: string;
  address: string;
  status: string;
  attempts: number;
  next_attempt_at: number;
  lease_until: number | null;
  last_reply: string | null;
  last_status: string | null;
  last_mx: string | null;
  updated_at: number;
}

const MESSAGE_COLUMNS = `id, user_id, created_at, envelope_from, subject, size, source,
  inline_css, track_clicks, track_opens, track_bounces`;

/** Prepared once per store: these run on hot paths (every idempotent send, every status poll). */
export class QueueInspector {
  private byId: Statement<MessageRow, [string]>;
  private byKey: Statement<MessageRow, [number, string]>;
  private recipientsOf: Statement<RecipientRow, [string]>;
  private depth: Statement<{ n: number }, []>;
  private pendingIds: Statement<{ message_id: string }, []>;

  constructor(sqlite: Database) {
    // the body blob is left out on purpose: a status read must not drag megabytes of MIME along
    this.byId = sqlite.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE id = ?`);
    this.byKey = sqlite.prepare(
      `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE user_id = ? AND idempotency_key = ? AND idempotency_key IS NOT NULL`,
    );
    this.recipientsOf = sqlite.prepare(
      `SELECT id, address, status, attempts, next_attempt_at, lease_until, last_reply, last_status, last_mx, updated_at
       FROM recipients WHERE message_id = ? ORDER BY rowid`,
    );
    // same predicate as the partial index recipients_due, so SQLite counts from the index
    this.depth = sqlite.prepare(`SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')`);
    this.pendingIds = sqlite.prepare(
      `SELECT DISTINCT r.message_id FROM recipients r JOIN messages m ON m.id = r.message_id
       WHERE r.status IN ('queued','deferred') ORDER BY m.created_at, m.id`,
    );
  }

  /** The message with its recipients in submission order, or null. */
  getMessage(id: string): MessageView | null {
    const row = this.byId.get(id);
    return row ? this.view(row) : null;
  }

  /** The message this user stored under this idempotency key, or null. */
  findByIdempotencyKey(userId: UserId, key: string): MessageView | null {
    const row = this.byKey.get(userId, key);
    return row ? this.view(row) : null;
  }

  /** Messages with at least one pending (queued/deferred) recipient, oldest first, with only those recipients. */
  listPending(): MessageView[] {
    return this.pendingIds.all().flatMap(({ message_id }) => {
      const m = this.getMessage(message_id);
      return m ? [{ ...m, recipients: m.recipients.filter(isPending) }] : [];
    });
  }

  /** Recipients still waiting for delivery (queued or deferred). */
  queueDepth(): number {
    return this.depth.get()?.n ?? 0;
  }

  private view(row: MessageRow): MessageView {
    return {
      id: row.id as MessageId,
      userId: row.user_id as UserId | null,
      createdAt: row.created_at,
      envelopeFrom: row.envelope_from,
      subject: row.subject,
      size: row.size,
      source: row.source as MessageSource,
      options: {
        inlineCss: row.inline_css === 1,
        trackClicks: row.track_clicks === 1,
        trackOpens: row.track_opens === 1,
        trackBounces: row.track_bounces === 1,
      },
      recipients: this.recipientsOf.all(row.id).map((r) => ({
        id: r.id as RecipientId,
        address: r.address,
        status: r.status as RecipientStatus,
        attempts: r.attempts,
        nextAttemptAt: r.next_attempt_at,
        leasedUntil: r.lease_until,
        lastReply: r.last_reply,
        lastStatus: r.last_status,
        lastMx: r.last_mx,
        updatedAt: r.updated_at,
      })),
    };
  }
}

/** Waiting for delivery: queued or deferred. */
export const isPending = (r: RecipientView): boolean => r.status === "queued" || r.status === "deferred";

/** A delivery attempt holds the recipient's lease at `now`. */
export const isInFlight = (r: RecipientView, now: number): boolean => isPending(r) && r.leasedUntil !== null && r.leasedUntil > now;

/** A message as JSON: GET /v1/messages/{id} (which adds each recipient's events) and `outpost queue show|list --json`. */
export interface MessageJson {
  id: string;
  /** RFC 3339, UTC */
  created_at: string;
  envelope: string;
  subject: string;
  size: number;
  source: MessageSource;
  user_id: number | null;
  /** under SPEC's /v1/send field names */
  options: { inlinizecss: boolean; clicktracking: boolean; openstracking: boolean; bouncetracking: boolean };
  recipients: RecipientJson[];
}

export interface RecipientJson {
  id: string;
  address: string;
  status: RecipientStatus;
  in_flight: boolean;
  attempts: number;
  /** RFC 3339 while pending, else null */
  next_attempt_at: string | null;
  last_reply: string | null;
  last_status: string | null;
  last_mx: string | null;
}

export function messageJson(m: MessageView, now: number): MessageJson {
  return {
    id: m.id,
    created_at: new Date(m.createdAt).toISOString(),
    envelope: m.envelopeFrom,
    subject: m.subject,
    size: m.size,
    source: m.source,
    user_id: m.userId,
    options: {
      inlinizecss: m.options.inlineCss,
      clicktracking: m.options.trackClicks,
      openstracking: m.options.trackOpens,
      bouncetracking: m.options.trackBounces,
    },
    recipients: m.recipients.map((r) => ({
      id: r.id,
      address: r.address,
      status: r.status,
      in_flight: isInFlight(r, now),
      attempts: r.attempts,
      next_attempt_at: isPending(r) ? new Date(r.nextAttemptAt).toISOString() : null,
      last_reply: r.lastReply,
      last_status: r.lastStatus,
      last_mx: r.lastMx,
    })),
  };
}
