/**
 * @module queue/admin — the operator's view of the queue and the changes they may make by hand
 * (Postfix `mailq`, `postqueue -f`, `postsuper -d`). Used by `outpost queue …`.
 *
 * `retry` only moves `next_attempt_at` of pending recipients that are not in flight; a running server picks the
 * change up the next time its scheduler looks at the queue. `delete` removes the message and its recipients and
 * records no event (SPEC has no event type for it; the earlier events stay as history). A recipient in flight at
 * that moment may still be delivered; its result then finds no row and is dropped.
 */
import type { Database, Statement } from "bun:sqlite";
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { MessageOptions, RecipientStatus } from "./enqueue.ts";

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
  createdAt: number;
  envelopeFrom: string;
  subject: string;
  size: number;
  source: string;
  userId: number | null;
  options: MessageOptions;
  recipients: RecipientView[];
}

interface JoinedRow {
  m_id: string;
  created_at: number;
  envelope_from: string;
  subject: string;
  size: number;
  source: string;
  user_id: number | null;
  inline_css: number;
  track_clicks: number;
  track_opens: number;
  track_bounces: number;
  r_id: string | null;
  address: string | null;
  status: string | null;
  attempts: number | null;
  next_attempt_at: number | null;
  lease_until: number | null;
  last_reply: string | null;
  last_status: string | null;
  last_mx: string | null;
  updated_at: number | null;
}

const SELECT = `SELECT m.id AS m_id, m.created_at, m.envelope_from, m.subject, m.size, m.source, m.user_id,
  m.inline_css, m.track_clicks, m.track_opens, m.track_bounces,
  r.id AS r_id, r.address, r.status, r.attempts, r.next_attempt_at, r.lease_until, r.last_reply, r.last_status,
  r.last_mx, r.updated_at`;

export class QueueAdmin {
  private pending: Statement<JoinedRow, []>;
  private one: Statement<JoinedRow, [string]>;
  private retryMessage: Statement;
  private retryEverything: Statement;
  private remove: Statement;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
  ) {
    // the body is never read here: listing a large queue must not load every message
    this.pending = sqlite.query(
      `${SELECT} FROM recipients r JOIN messages m ON m.id = r.message_id
       WHERE r.status IN ('queued','deferred') ORDER BY m.created_at, m.id, r.rowid`,
    );
    this.one = sqlite.query(
      `${SELECT} FROM messages m LEFT JOIN recipients r ON r.message_id = m.id WHERE m.id = ? ORDER BY r.rowid`,
    );
    const retryable = `status IN ('queued','deferred') AND next_attempt_at > ?1 AND (lease_until IS NULL OR lease_until <= ?1)`;
    this.retryMessage = sqlite.query(
      `UPDATE recipients SET next_attempt_at = ?1, updated_at = ?1 WHERE message_id = ?2 AND ${retryable}`,
    );
    this.retryEverything = sqlite.query(
      `UPDATE recipients INDEXED BY recipients_due SET next_attempt_at = ?1, updated_at = ?1 WHERE ${retryable}`,
    );
    this.remove = sqlite.query("DELETE FROM messages WHERE id = ?");
  }

  /** Messages with at least one pending (queued/deferred) recipient, oldest first, with those recipients. */
  listPending(): MessageView[] {
    return group(this.pending.all());
  }

  /** One message with all its recipients (any status), or null for an unknown id. */
  show(id: string): MessageView | null {
    return group(this.one.all(id))[0] ?? null;
  }

  /** Makes one message's waiting recipients due now. Returns how many, or null for an unknown id. */
  retry(id: string): number | null {
    if (!this.show(id)) return null;
    return this.retryMessage.run(this.now(), id).changes;
  }

  /** Makes every waiting recipient due now (`queue flush`). Returns how many. */
  retryAll(): number {
    return this.retryEverything.run(this.now()).changes;
  }

  /** Removes a message and its recipients. Returns false for an unknown id. */
  delete(id: string): boolean {
    // explicit rather than relying on ON DELETE CASCADE, which needs foreign_keys on in this connection
    return this.sqlite.transaction(() => {
      this.sqlite.run("DELETE FROM recipients WHERE message_id = ?", [id]);
      return this.remove.run(id).changes > 0;
    }).immediate();
  }
}

function group(rows: JoinedRow[]): MessageView[] {
  const out: MessageView[] = [];
  let current: MessageView | undefined;
  for (const r of rows) {
    if (!current || current.id !== r.m_id) {
      current = {
        id: r.m_id as MessageId,
        createdAt: r.created_at,
        envelopeFrom: r.envelope_from,
        subject: r.subject,
        size: r.size,
        source: r.source,
        userId: r.user_id,
        options: {
          inlineCss: !!r.inline_css,
          trackClicks: !!r.track_clicks,
          trackOpens: !!r.track_opens,
          trackBounces: !!r.track_bounces,
        },
        recipients: [],
      };
      out.push(current);
    }
    if (r.r_id === null) continue;
    current.recipients.push({
      id: r.r_id as RecipientId,
      address: r.address!,
      status: r.status as RecipientStatus,
      attempts: r.attempts!,
      nextAttemptAt: r.next_attempt_at!,
      leasedUntil: r.lease_until,
      lastReply: r.last_reply,
      lastStatus: r.last_status,
      lastMx: r.last_mx,
      updatedAt: r.updated_at!,
    });
  }
  return out;
}
