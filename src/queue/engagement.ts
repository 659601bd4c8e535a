/**
 * @module queue/engagement — what a recipient did with delivered mail (opened it, clicked a link, unsubscribed),
 * recorded as events on its recipient row for the message's owner. The row's status does not change: the mail
 * was delivered. Like queue/late.ts, record() runs inside a transaction the caller opened, so an unsubscribe's
 * event and its suppression commit together.
 */
import type { Database, Statement } from "bun:sqlite";
import type { EventDetails, EventLabels, EventRecorder } from "../events/record.ts";
import { EventQuery } from "../events/query.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { EngagedRecipient, EngagementStore, EngagementType } from "../tracking/record.ts";

interface Row {
  id: string;
  message_id: string;
  address: string;
  user_id: number | null;
  message_id_header: string | null;
}

export class Engagement implements EngagementStore {
  private byId: Statement<Row, [string]>;
  private labelsOf: Statement<EventLabels, [string]>;
  private query: EventQuery;

  constructor(
    sqlite: Database,
    private events: EventRecorder,
  ) {
    this.byId = sqlite.query(
      `SELECT r.id, r.message_id, r.address, m.user_id, m.message_id_header FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.id = ?`,
    );
    this.labelsOf = sqlite.query("SELECT tag, metadata FROM messages WHERE id = ?");
    this.query = new EventQuery(sqlite);
  }

  /** The row, whatever its status; null when it does not exist (never did, or deleted). */
  recipient(id: RecipientId): EngagedRecipient | null {
    const r = this.byId.get(id);
    if (!r) return null;
    return {
      id: r.id as RecipientId, messageId: r.message_id as MessageId, address: r.address, userId: r.user_id as UserId | null,
      messageIdHeader: r.message_id_header,
    };
  }

  record(type: EngagementType, rec: EngagedRecipient, details: EventDetails, now: number): void {
    const labels = this.labelsOf.get(rec.messageId) ?? undefined;
    this.events.record({ type, messageId: rec.messageId, recipientId: rec.id, recipient: rec.address, userId: rec.userId, time: now, details, labels });
  }

  /** Has this recipient an event of this type already? */
  hasRecorded(rec: EngagedRecipient, type: EngagementType): boolean {
    return this.query.hasEvent(rec.messageId, rec.id, type);
  }
}
