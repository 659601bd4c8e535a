/**
 * @module queue/late — what a receiver reports after the SMTP transaction: an asynchronous bounce (a DSN to the
 * VERP return path) or a complaint, recorded on the recipient row with its event.
 *
 * Like queue/settle.ts, each function must run inside a transaction the caller opened, so the row, its event and
 * (the caller's) suppression commit together. A late bounce is final whatever the row said before: a receiver
 * that answered 250 and then bounced has changed its mind, and `delivered` becomes `bounced`. A pending row
 * (queued, deferred, perhaps in flight) becomes `bounced` too; the delivery's own settle then finds it no longer
 * pending and leaves it alone.
 */
import type { Database, Statement } from "bun:sqlite";
import type { EventDetails, EventLabels, EventRecorder } from "../events/record.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { RecipientStatus } from "./enqueue.ts";

/** A recipient row as a report about it needs it. */
export interface ReportedRecipient {
  id: RecipientId;
  messageId: MessageId;
  address: string;
  status: RecipientStatus;
  /** the message's owner: whose suppression list a hard bounce or a complaint goes on */
  userId: UserId | null;
  /** the message's RFC 5322 Message-ID, for the log line */
  messageIdHeader: string | null;
  /** the message's tag and metadata, which its events carry */
  labels: EventLabels;
}

/** What the report says about the recipient. */
export interface LateBounce {
  /** the diagnostic as reported ("550 5.1.1 no such user") */
  reply: string;
  /** RFC 3463 code */
  status: string;
  /** the reporting or remote MTA */
  mx?: string;
}

interface Row {
  id: string;
  message_id: string;
  address: string;
  status: string;
  user_id: number | null;
  message_id_header: string | null;
  tag: string | null;
  metadata: string | null;
}

/** A report names one message; more rows than this under one Message-ID is not a message we sent */
const MAX_NAMED = 1000;

function toReported(r: Row): ReportedRecipient {
  return {
    id: r.id as RecipientId,
    messageId: r.message_id as MessageId,
    address: r.address,
    status: r.status as RecipientStatus,
    userId: r.user_id as UserId | null,
    messageIdHeader: r.message_id_header,
    labels: { tag: r.tag, metadata: r.metadata },
  };
}

export class LateReports {
  private byId: Statement<Row, [string]>;
  private byMessageIdHeader: Statement<Row, [string]>;
  private bounce: Statement;

  constructor(
    sqlite: Database,
    private events: EventRecorder,
  ) {
    this.byId = sqlite.query(
      `SELECT r.id, r.message_id, r.address, r.status, m.user_id, m.message_id_header, m.tag, m.metadata
       FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.id = ?`,
    );
    // newest message first: a Message-ID reused by a resend names the latest copy
    this.byMessageIdHeader = sqlite.query(
      `SELECT r.id, r.message_id, r.address, r.status, m.user_id, m.message_id_header, m.tag, m.metadata
       FROM messages m JOIN recipients r ON r.message_id = m.id
       WHERE m.message_id_header = ? ORDER BY m.created_at DESC, r.rowid LIMIT ${MAX_NAMED}`,
    );
    // a suppressed row was never sent, so nothing of ours can have bounced; a bounced one stays as first recorded
    this.bounce = sqlite.query(
      `UPDATE recipients SET status = 'bounced', lease_until = NULL, last_reply = ?1, last_status = ?2, last_mx = ?3,
         updated_at = ?4
       WHERE id = ?5 AND status NOT IN ('bounced','suppressed')`,
    );
  }

  /** The row, whatever its status; null when it does not exist (never did, or deleted). */
  recipient(id: RecipientId): ReportedRecipient | null {
    const r = this.byId.get(id);
    return r ? toReported(r) : null;
  }

  /** The recipient rows of the messages whose Message-ID field is `msgId` ("<id@host>"), newest message first. */
  recipientsOfMessageId(msgId: string): ReportedRecipient[] {
    return this.byMessageIdHeader.all(msgId).map(toReported);
  }

  /**
   * Marks the row bounced and records a `bounced` event with `details` (plus mx/reply/status). False, and no
   * event, when the row was already bounced (a repeated report) or suppressed.
   */
  recordLateBounce(rec: ReportedRecipient, bounce: LateBounce, details: EventDetails, now: number): boolean {
    if (this.bounce.run(bounce.reply, bounce.status, bounce.mx ?? null, now, rec.id).changes === 0) return false;
    this.record("bounced", rec, now, {
      ...(bounce.mx ? { mx: bounce.mx } : {}),
      reply: bounce.reply,
      status: bounce.status,
      previous_status: rec.status,
      ...details,
    });
    return true;
  }

  /** A `complained` event; the row's status stays what it was (the mail was delivered). */
  recordComplaint(rec: ReportedRecipient, details: EventDetails, now: number): void {
    this.record("complained", rec, now, details);
  }

  private record(type: "bounced" | "complained", rec: ReportedRecipient, now: number, details: EventDetails): void {
    this.events.record({ type, messageId: rec.messageId, recipientId: rec.id, recipient: rec.address, userId: rec.userId, time: now, details, labels: rec.labels });
  }
}
