/**
 * @module queue/settle — the state changes that end an attempt: delivered | deferred(next time) | bounced.
 *
 * Each function changes one recipient row and records its event through the EventRecorder, and must run inside
 * a transaction the caller opened (`settler.transaction(fn)`), so state and history commit together. A row that is
 * no longer pending (already settled by a duplicate attempt after its lease ran out, or deleted by
 * `outpost queue delete`) is left alone and gets no event: the functions return false.
 */
import type { Database, Statement } from "bun:sqlite";
import type { EventLabels, EventRecorder } from "../events/record.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";

/** A pending recipient as settle sees it, read inside the settling transaction. */
export interface PendingRecipient {
  id: RecipientId;
  messageId: MessageId;
  address: string;
  /** attempts made before this one */
  attempts: number;
  userId: UserId | null;
  /** the message's tag and metadata, which its events carry */
  labels: EventLabels;
}

/** What one attempt learned about one recipient. */
export interface AttemptInfo {
  /** the full reply as recorded ("550 5.1.1 no such user", or a local description) */
  reply: string;
  /** RFC 3463 code */
  status: string;
  mx?: string;
}

interface PendingRow {
  id: string;
  message_id: string;
  address: string;
  attempts: number;
  user_id: number | null;
  tag: string | null;
  metadata: string | null;
}

export class QueueSettler {
  private pending: Statement<PendingRow, [string]>;
  private finish: Statement;
  private defer: Statement;
  private warn: Statement;

  constructor(
    private sqlite: Database,
    private events: EventRecorder,
  ) {
    this.pending = sqlite.query(
      `SELECT r.id, r.message_id, r.address, r.attempts, m.user_id, m.tag, m.metadata
       FROM recipients r JOIN messages m ON m.id = r.message_id
       WHERE r.id = ? AND r.status IN ('queued','deferred')`,
    );
    this.finish = sqlite.query(
      `UPDATE recipients SET status = ?1, attempts = attempts + 1, lease_until = NULL, last_reply = ?2,
         last_status = ?3, last_mx = ?4, updated_at = ?5
       WHERE id = ?6 AND status IN ('queued','deferred')`,
    );
    this.defer = sqlite.query(
      `UPDATE recipients SET status = 'deferred', attempts = attempts + 1, next_attempt_at = ?1, lease_until = NULL,
         last_reply = ?2, last_status = ?3, last_mx = ?4, updated_at = ?5
       WHERE id = ?6 AND status IN ('queued','deferred')`,
    );
    this.warn = sqlite.query("UPDATE messages SET delay_warned = 1 WHERE id = ? AND delay_warned = 0");
  }

  /**
   * Marks the message as warned about its delay; true only the first time, so its sender gets one warning
   * however many destinations and attempts defer it.
   */
  claimDelayWarning(messageId: MessageId): boolean {
    return this.warn.run(messageId).changes > 0;
  }

  /** Runs `fn` in one IMMEDIATE transaction (commit = fsync with synchronous=FULL). */
  transaction<T>(fn: () => T): T {
    return this.sqlite.transaction(fn).immediate();
  }

  /** The recipient if it is still pending (queued/deferred), else null. */
  pendingRecipient(id: RecipientId): PendingRecipient | null {
    const r = this.pending.get(id);
    if (!r) return null;
    return {
      id: r.id as RecipientId,
      messageId: r.message_id as MessageId,
      address: r.address,
      attempts: r.attempts,
      userId: r.user_id as UserId | null,
      labels: { tag: r.tag, metadata: r.metadata },
    };
  }

  markDelivered(rec: PendingRecipient, info: AttemptInfo, now: number): boolean {
    return this.settleFinal("delivered", rec, info, now);
  }

  markBounced(rec: PendingRecipient, info: AttemptInfo, now: number): boolean {
    return this.settleFinal("bounced", rec, info, now);
  }

  /** Back to the queue until `nextAttemptAt`, attempts + 1. */
  markDeferred(rec: PendingRecipient, info: AttemptInfo, nextAttemptAt: number, now: number): boolean {
    const changed = this.defer.run(nextAttemptAt, info.reply, info.status, info.mx ?? null, now, rec.id).changes > 0;
    if (changed) {
      this.record("deferred", rec, info, now, {
        attempts: rec.attempts + 1,
        next_attempt_at: new Date(nextAttemptAt).toISOString(),
      });
    }
    return changed;
  }

  private settleFinal(status: "delivered" | "bounced", rec: PendingRecipient, info: AttemptInfo, now: number): boolean {
    const changed = this.finish.run(status, info.reply, info.status, info.mx ?? null, now, rec.id).changes > 0;
    if (changed) this.record(status, rec, info, now, { attempts: rec.attempts + 1 });
    return changed;
  }

  private record(
    type: "delivered" | "deferred" | "bounced",
    rec: PendingRecipient,
    info: AttemptInfo,
    now: number,
    extra: Record<string, unknown>,
  ): void {
    this.events.record({
      type,
      messageId: rec.messageId,
      recipientId: rec.id,
      recipient: rec.address,
      userId: rec.userId,
      time: now,
      labels: rec.labels,
      details: { ...(info.mx ? { mx: info.mx } : {}), reply: info.reply, status: info.status, ...extra },
    });
  }
}
