/**
 * @module queue/inspect — read-only views of the queue: one message with its recipients, its stored MIME, the
 * message an idempotency key names, a user's messages page by page, the pending messages (streamed, held ones
 * included) and the queue depth; and the one JSON rendering of a message. Never writes; the API and `outpost queue list|show` read through here.
 */
import type { Database, Statement } from "bun:sqlite";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import { BODY_COLUMNS, bodyOf, type BodyColumns } from "./bodies.ts";
import type { MessageOptions, MessageSource, RecipientStatus } from "./enqueue.ts";
import { eachPending } from "./pending.ts";

export interface RecipientView {
  id: RecipientId;
  address: string;
  status: RecipientStatus;
  attempts: number;
  /** ms since epoch; meaningful for queued/deferred (a held row keeps the time it had when it was held) */
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
  /** the RFC 5322 Message-ID; null for a message stored before outpost kept it */
  messageIdHeader: string | null;
  tag: string | null;
  metadata: Record<string, string>;
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
  unsubscribe: number;
  message_id_header: string | null;
  tag: string | null;
  metadata: string | null;
}

/** One pending recipient joined with its message, for the streamed listing; recipient columns carry an r_ prefix. */
interface PendingRow extends MessageRow {
  r_id: string;
  r_address: string;
  r_status: string;
  r_attempts: number;
  r_next_attempt_at: number;
  r_lease_until: number | null;
  r_last_reply: string | null;
  r_last_status: string | null;
  r_last_mx: string | null;
  r_updated_at: number;
}

/** How much is waiting: messages with a pending recipient, and pending recipients (held ones included). */
export interface PendingCounts {
  messages: number;
  recipients: number;
  /** of `recipients`, how many are held */
  held: number;
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
  inline_css, track_clicks, track_opens, track_bounces, unsubscribe, message_id_header, tag, metadata`;

/**
 * The pending and the held rows of `recipients` as one relation. Two halves, each through its partial index: one
 * `status IN (…, 'held')` matches no partial index and would read every finished row too.
 */
const PENDING_AND_HELD = (columns: string) =>
  `${eachPending((from, inState) => `SELECT ${columns} FROM ${from} WHERE ${inState}`)}
   UNION ALL SELECT ${columns} FROM recipients INDEXED BY recipients_held WHERE status = 'held'`;

/** Prepared once per store: these run on hot paths (every idempotent send, every status poll). */
export class QueueInspector {
  private byId: Statement<MessageRow, [string]>;
  private byKey: Statement<MessageRow & { idempotency_hash: string | null }, [number, string]>;
  private recipientsOf: Statement<RecipientRow, [string]>;
  private depth: Statement<{ n: number }, []>;
  private body: Statement<BodyColumns, [string]>;
  private pendingRows: Statement<PendingRow, []>;
  private pendingTotals: Statement<PendingCounts, []>;

  constructor(private sqlite: Database) {
    // the body blob is left out on purpose: a status read must not drag megabytes of MIME along
    this.byId = sqlite.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE id = ?`);
    this.byKey = sqlite.prepare(
      `SELECT ${MESSAGE_COLUMNS}, idempotency_hash FROM messages WHERE user_id = ? AND idempotency_key = ? AND idempotency_key IS NOT NULL`,
    );
    this.recipientsOf = sqlite.prepare(
      `SELECT id, address, status, attempts, next_attempt_at, lease_until, last_reply, last_status, last_mx, updated_at
       FROM recipients WHERE message_id = ? ORDER BY rowid`,
    );
    // counted from the pending partial indexes, named: when nearly every row is pending (a big backlog, little
    // history) the planner would otherwise read the whole table, several times the indexes' size
    this.depth = sqlite.prepare(
      `SELECT sum(n) AS n FROM (${eachPending((from, inState) => `SELECT count(*) AS n FROM ${from} WHERE ${inState}`)})`,
    );
    this.body = sqlite.prepare(`SELECT ${BODY_COLUMNS} FROM messages WHERE id = ?`);
    // one query for the whole listing, read row by row: a query per message made `queue list` on 300,000
    // messages take seconds and hold the whole queue in memory
    this.pendingRows = sqlite.prepare(
      `SELECT ${MESSAGE_COLUMNS.split(",").map((c) => `m.${c.trim()}`).join(", ")},
         r.id AS r_id, r.address AS r_address, r.status AS r_status, r.attempts AS r_attempts,
         r.next_attempt_at AS r_next_attempt_at, r.lease_until AS r_lease_until, r.last_reply AS r_last_reply,
         r.last_status AS r_last_status, r.last_mx AS r_last_mx, r.updated_at AS r_updated_at
       FROM (${PENDING_AND_HELD("id, message_id, address, status, attempts, next_attempt_at, lease_until, last_reply, last_status, last_mx, updated_at, rowid AS seq")}) r
       JOIN messages m ON m.id = r.message_id
       ORDER BY m.created_at, m.id, r.seq`,
    );
    this.pendingTotals = sqlite.prepare(
      `SELECT count(DISTINCT message_id) AS messages, count(*) AS recipients, coalesce(sum(status = 'held'), 0) AS held
       FROM (${PENDING_AND_HELD("message_id, status")})`,
    );
  }

  /** The message with its recipients in submission order, or null. */
  getMessage(id: string): MessageView | null {
    const row = this.byId.get(id);
    return row ? this.view(row) : null;
  }

  /**
   * The message this user stored under this idempotency key, with the fingerprint of the submission that took the
   * key (null for mail stored before fingerprints were kept), or null.
   */
  findByIdempotencyKey(userId: UserId, key: string): { message: MessageView; hash: string | null } | null {
    const row = this.byKey.get(userId, key);
    return row ? { message: this.view(row), hash: row.idempotency_hash } : null;
  }

  /**
   * Messages with at least one pending (queued/deferred) or held recipient, oldest first, each with only those
   * recipients. Streamed: only the message being assembled is in memory, however long the queue is. Stopping
   * early (break) resets the statement.
   */
  *pending(): Generator<MessageView, void, undefined> {
    let current: MessageView | null = null;
    for (const row of this.pendingRows.iterate()) {
      if (current?.id !== row.id) {
        if (current) yield current;
        current = { ...messageOf(row), recipients: [] };
      }
      current.recipients.push(recipientOf(recipientHalf(row)));
    }
    if (current) yield current;
  }

  /** The message as stored (CRLF MIME, as prepared at intake), or null. */
  storedMessage(id: string): Buffer | null {
    const row = this.body.get(id);
    return row ? bodyOf(this.sqlite, row) : null;
  }

  /** What `pending()` would yield in total, counted without reading it. */
  pendingCounts(): PendingCounts {
    return this.pendingTotals.get() ?? { messages: 0, recipients: 0, held: 0 };
  }

  /**
   * One page of a user's messages, newest first, each with all its recipients. `more` is set when another page
   * may follow: pass its last message as the next filter's `after`.
   */
  listMessages(filter: MessageFilter): { messages: MessageView[]; more: boolean } {
    const { sql, args } = listQuery({ ...filter, limit: filter.limit + 1 });
    const rows = this.sqlite.query<MessageRow, (string | number)[]>(sql).all(...args);
    const more = rows.length > filter.limit;
    return { messages: rows.slice(0, filter.limit).map((r) => this.view(r)), more };
  }

  /** Recipients still waiting for delivery (queued or deferred; held ones are not waiting for it). */
  queueDepth(): number {
    return this.depth.get()?.n ?? 0;
  }

  private view(row: MessageRow): MessageView {
    return { ...messageOf(row), recipients: this.recipientsOf.all(row.id).map(recipientOf) };
  }
}

function messageOf(row: MessageRow): Omit<MessageView, "recipients"> {
  return {
    id: row.id as MessageId,
    userId: row.user_id as UserId | null,
    createdAt: row.created_at,
    envelopeFrom: row.envelope_from,
    subject: row.subject,
    size: row.size,
    source: row.source as MessageSource,
    messageIdHeader: row.message_id_header,
    options: {
      inlineCss: row.inline_css === 1,
      trackClicks: row.track_clicks === 1,
      trackOpens: row.track_opens === 1,
      trackBounces: row.track_bounces === 1,
      unsubscribe: row.unsubscribe === 1,
    },
    tag: row.tag,
    metadata: row.metadata === null ? {} : (JSON.parse(row.metadata) as Record<string, string>),
  };
}

function recipientOf(r: RecipientRow): RecipientView {
  return {
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
  };
}

/** The recipient half of a joined row, under the plain column names. */
function recipientHalf(row: PendingRow): RecipientRow {
  return {
    id: row.r_id,
    address: row.r_address,
    status: row.r_status,
    attempts: row.r_attempts,
    next_attempt_at: row.r_next_attempt_at,
    lease_until: row.r_lease_until,
    last_reply: row.r_last_reply,
    last_status: row.r_last_status,
    last_mx: row.r_last_mx,
    updated_at: row.r_updated_at,
  };
}

/** What GET /v1/messages filters by; every filter is optional but the owner. */
export interface MessageFilter {
  userId: UserId;
  /** messages with a recipient in this status, as the API shows it (`deferred` includes held) */
  status?: Exclude<RecipientStatus, "held">;
  /** messages to this address: its mail/address.ts addressKey */
  recipientKey?: string;
  tag?: string;
  /** created at or after (ms) */
  since?: number;
  /** created before (ms) */
  until?: number;
  /** the last message of the previous page: the page goes on after it */
  after?: { createdAt: number; id: string };
  limit: number;
}

/**
 * The SQL of a page. It walks the owner's messages newest first through messages_user_created, or, with a tag,
 * messages_user_tag, both ending in (created_at, id): the keyset cursor. A message created while a client pages has
 * the newest created_at, so it never shifts a later page. Status and recipient are checked per message through
 * recipients_message and recipients_address. Exported for the query-plan test.
 */
export function listQuery(f: MessageFilter): { sql: string; args: (string | number)[] } {
  const where = ["m.user_id = ?"];
  const args: (string | number)[] = [f.userId];
  const add = (clause: string, ...values: (string | number)[]) => {
    where.push(clause);
    args.push(...values);
  };
  if (f.tag !== undefined) add("m.tag = ?", f.tag);
  if (f.since !== undefined) add("m.created_at >= ?", f.since);
  if (f.until !== undefined) add("m.created_at < ?", f.until);
  if (f.after) add("(m.created_at, m.id) < (?, ?)", f.after.createdAt, f.after.id);
  if (f.status !== undefined) {
    const statuses = f.status === "deferred" ? ["deferred", "held"] : [f.status];
    add(`EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.status IN (${statuses.map(() => "?").join(",")}))`, ...statuses);
  }
  if (f.recipientKey !== undefined) add("m.id IN (SELECT message_id FROM recipients WHERE address_key = ?)", f.recipientKey);
  const columns = MESSAGE_COLUMNS.split(",").map((c) => `m.${c.trim()}`).join(", ");
  const sql = `SELECT ${columns} FROM messages m WHERE ${where.join(" AND ")} ORDER BY m.created_at DESC, m.id DESC LIMIT ?`;
  return { sql, args: [...args, f.limit] };
}

/** Waiting for delivery: queued or deferred. */
export const isPending = (r: RecipientView): boolean => r.status === "queued" || r.status === "deferred";

/** An operator holds it (`outpost queue hold`): not attempted until released. */
export const isHeld = (r: RecipientView): boolean => r.status === "held";

/** A delivery attempt holds the recipient's lease at `now`. */
export const isInFlight = (r: RecipientView, now: number): boolean => isPending(r) && r.leasedUntil !== null && r.leasedUntil > now;

/** A message as JSON: GET /v1/messages/{id} (which adds each recipient's events) and `outpost queue show|list --json`. */
export interface MessageJson {
  id: string;
  /** the RFC 5322 Message-ID */
  message_id: string | null;
  /** RFC 3339, UTC */
  created_at: string;
  envelope: string;
  subject: string;
  size: number;
  source: MessageSource;
  user_id: number | null;
  tag: string | null;
  metadata: Record<string, string>;
  /** under the /v1/send field names (docs/api.md) */
  options: { inlinizecss: boolean; clicktracking: boolean; openstracking: boolean; bouncetracking: boolean; unsubscribe: boolean };
  recipients: RecipientJson[];
}

export interface RecipientJson {
  id: string;
  address: string;
  /** a held recipient shows as `deferred` (with `held: true`): the statuses API clients know stay the five */
  status: Exclude<RecipientStatus, "held">;
  held: boolean;
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
    message_id: m.messageIdHeader,
    created_at: new Date(m.createdAt).toISOString(),
    envelope: m.envelopeFrom,
    subject: m.subject,
    size: m.size,
    source: m.source,
    user_id: m.userId,
    tag: m.tag,
    metadata: m.metadata,
    options: {
      inlinizecss: m.options.inlineCss,
      clicktracking: m.options.trackClicks,
      openstracking: m.options.trackOpens,
      bouncetracking: m.options.trackBounces,
      unsubscribe: m.options.unsubscribe,
    },
    recipients: m.recipients.map((r) => ({
      id: r.id,
      address: r.address,
      status: r.status === "held" ? "deferred" : r.status,
      held: isHeld(r),
      in_flight: isInFlight(r, now),
      attempts: r.attempts,
      next_attempt_at: isPending(r) ? new Date(r.nextAttemptAt).toISOString() : null,
      last_reply: r.lastReply,
      last_status: r.lastStatus,
      last_mx: r.lastMx,
    })),
  };
}
