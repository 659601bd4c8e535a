/**
 * @module events/query — reads the event log: a user's events page by page (cursor = event id), and one
 * message's history per recipient. Renders the EVENT shape of docs/api.md, which webhooks should share.
 */
import type { Database, Statement } from "bun:sqlite";
import type { EventType } from "../config/schema.ts";
import type { UserId } from "../mail/ids.ts";

/**
 * EVENT (docs/api.md): `{id, type, time (RFC 3339 UTC), message_id, recipient, details}`, and the message's `tag` (null
 * when none) and `metadata` ({} when none), so every event says which of the sender's records it belongs to.
 */
export interface EventJson {
  id: string;
  type: EventType;
  time: string;
  message_id: string;
  recipient: string | null;
  tag: string | null;
  metadata: Record<string, string>;
  details: Record<string, unknown>;
}

export interface EventRow {
  id: number;
  type: string;
  time: number;
  message_id: string;
  recipient_id: string | null;
  recipient: string | null;
  details: string;
  tag: string | null;
  /** a JSON object's text, or null */
  metadata: string | null;
}

export interface EventPage {
  events: EventJson[];
  /** pass as `since` to continue; unchanged when the page is empty, so a poller never skips or repeats */
  nextCursor: string;
}

export interface PageQuery {
  userId: UserId;
  /** the last cursor seen; "" or "0" starts at the oldest event */
  since: string;
  /** only these types; empty = all */
  types: readonly EventType[];
  /** only this message's events */
  messageId?: string;
  limit: number;
}

export const MAX_PAGE = 1000;

export function renderEvent(row: EventRow): EventJson {
  return {
    id: String(row.id),
    type: row.type as EventType,
    time: new Date(row.time).toISOString(),
    message_id: row.message_id,
    recipient: row.recipient,
    tag: row.tag ?? null,
    metadata: objectOf(row.metadata ?? null) as Record<string, string>,
    details: objectOf(row.details),
  };
}

/** A stored JSON object; {} for none or for text that is not one. */
function objectOf(text: string | null): Record<string, unknown> {
  if (text === null) return {};
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** A cursor is the decimal id of the last event seen. Returns null for anything else. */
export function parseCursor(since: string): number | null {
  if (since === "") return 0;
  if (!/^\d{1,15}$/.test(since)) return null;
  return Number(since);
}

/** What renderEvent needs of an events row: every reader of the log (webhooks too) selects these. */
export const EVENT_COLUMNS = "id, type, time, message_id, recipient_id, recipient, details, tag, metadata";
const COLUMNS = EVENT_COLUMNS;

export class EventQuery {
  private page: Statement<EventRow, [number, number, number]>;
  private ofMessage: Statement<EventRow, [string]>;
  private one: Statement<{ id: number }, [string, string, string]>;

  constructor(private sqlite: Database) {
    // events_user (user_id, id) serves this directly: seek to the cursor, read forward
    this.page = sqlite.prepare(`SELECT ${COLUMNS} FROM events WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`);
    this.ofMessage = sqlite.prepare(`SELECT ${COLUMNS} FROM events WHERE message_id = ? ORDER BY id`);
    this.one = sqlite.prepare("SELECT id FROM events WHERE message_id = ? AND recipient_id = ? AND type = ? LIMIT 1");
  }

  /**
   * The user's events after `since`, oldest first. Event ids grow in commit order (one writer), so a
   * reader that resumes from the last id it saw never misses a later commit.
   */
  pageFor(q: PageQuery): EventPage {
    const after = parseCursor(q.since);
    if (after === null) throw new RangeError(`invalid cursor ${JSON.stringify(q.since)}`);
    const limit = Math.max(1, Math.min(MAX_PAGE, Math.floor(q.limit)));
    const rows =
      q.types.length === 0 && q.messageId === undefined ? this.page.all(q.userId, after, limit) : this.filtered(q, after, limit);
    const last = rows[rows.length - 1];
    return { events: rows.map(renderEvent), nextCursor: last ? String(last.id) : q.since === "" ? "0" : q.since };
  }

  /** Every event of one message, grouped by recipient id (events without a recipient are left out). */
  historyOf(messageId: string): Map<string, EventJson[]> {
    const byRecipient = new Map<string, EventJson[]>();
    for (const row of this.ofMessage.all(messageId)) {
      if (row.recipient_id === null) continue;
      let list = byRecipient.get(row.recipient_id);
      if (!list) byRecipient.set(row.recipient_id, (list = []));
      list.push(renderEvent(row));
    }
    return byRecipient;
  }

  /** Has this recipient of this message an event of this type? (Through events_message: a message has few events.) */
  hasEvent(messageId: string, recipientId: string, type: EventType): boolean {
    return this.one.get(messageId, recipientId, type) !== null;
  }

  /** With a message id, through events_message (a message has few events); else events_user, as the plain page. */
  private filtered(q: PageQuery, after: number, limit: number): EventRow[] {
    const where = ["user_id = ?", "id > ?"];
    const args: (string | number)[] = [q.userId, after];
    if (q.messageId !== undefined) {
      where.push("message_id = ?");
      args.push(q.messageId);
    }
    if (q.types.length > 0) {
      where.push(`type IN (${q.types.map(() => "?").join(",")})`);
      args.push(...q.types);
    }
    // the filters vary per call; sqlite caches the compiled statement by its text
    return this.sqlite
      .query<EventRow, (string | number)[]>(`SELECT ${COLUMNS} FROM events WHERE ${where.join(" AND ")} ORDER BY id LIMIT ?`)
      .all(...args, limit);
  }
}
