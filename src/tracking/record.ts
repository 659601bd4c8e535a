/**
 * @module tracking/record — a verified hit on a tracking link → its event on the recipient (`clicked`, `opened`,
 * `unsubscribed`) for the message's owner, and for an unsubscribe the address on that owner's suppression list,
 * committed together; one mail-log line per event after the commit. Storage comes in through the ports below
 * (queue/engagement.ts, suppression/list.ts), so this module knows no SQL.
 *
 * Every click and every open is an event (a reader who opens a message twice opened it twice); an unsubscribe is
 * one event per recipient, however often its link is posted, and its suppression is idempotent.
 */
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import type { TrackedClick, TrackedRecipient } from "./token.ts";

export type EngagementType = "clicked" | "opened" | "unsubscribed";

/** A recipient row as a tracking hit needs it. */
export interface EngagedRecipient {
  id: RecipientId;
  messageId: MessageId;
  address: string;
  /** the message's owner: whose events these are, whose suppression list an unsubscribe goes on */
  userId: UserId | null;
  /** the message's RFC 5322 Message-ID, for the log line */
  messageIdHeader?: string | null;
}

/** Recipient rows and their events (queue/engagement.ts). record() runs inside transaction(). */
export interface EngagementStore {
  recipient(id: RecipientId): EngagedRecipient | null;
  record(type: EngagementType, rec: EngagedRecipient, details: Record<string, unknown>, now: number): void;
  hasRecorded(rec: EngagedRecipient, type: EngagementType): boolean;
}

/** A user's suppression list (suppression/list.ts SuppressionWriter); true when the list changed. */
export interface SuppressionAdder {
  add(owner: UserId | null, address: string, reason: "unsubscribe", now: number): boolean;
}

export interface TrackingRecorderDeps {
  store: EngagementStore;
  suppressions: SuppressionAdder;
  /** runs `fn` in one write transaction */
  transaction<T>(fn: () => T): T;
  log: Logger;
  /** a user's name for the log line (auth/users.ts UserNames); default: none known */
  userName?: (id: UserId | null) => string | null;
  now?: () => number;
}

/** Who followed the link, as the HTTP edge saw it. */
export interface Client {
  ip: string | null;
  userAgent: string | null;
}

export interface Recorded {
  recipient: EngagedRecipient;
  /** false for an unsubscribe this recipient had made before (nothing new recorded) */
  recorded: boolean;
}

/** A user agent is the client's to write: kept, but not without bound. */
const MAX_USER_AGENT = 512;

export class TrackingRecorder {
  private now: () => number;

  constructor(private deps: TrackingRecorderDeps) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * The recipient row a verified token names; null when it is gone (its message deleted from the queue) or, were
   * the ids ever to disagree, belongs to another message.
   */
  recipientOf(hit: TrackedRecipient): EngagedRecipient | null {
    const rec = this.deps.store.recipient(hit.recipientId);
    return rec && rec.messageId === hit.messageId ? rec : null;
  }

  click(hit: TrackedClick, client: Client): Recorded | null {
    return this.hit("clicked", hit, { url: hit.url, link_index: hit.index, ...clientDetails(client) });
  }

  open(hit: TrackedRecipient, client: Client): Recorded | null {
    return this.hit("opened", hit, clientDetails(client));
  }

  /** Suppresses the address for the message's owner (reason `unsubscribe`) and records `unsubscribed` once. */
  unsubscribe(hit: TrackedRecipient, client: Client): (Recorded & { suppressed: boolean }) | null {
    const rec = this.recipientOf(hit);
    if (!rec) return null;
    const now = this.now();
    const details = clientDetails(client);
    const out = this.deps.transaction(() => {
      const suppressed = this.deps.suppressions.add(rec.userId, rec.address, "unsubscribe", now);
      if (this.deps.store.hasRecorded(rec, "unsubscribed")) return { recipient: rec, recorded: false, suppressed };
      this.deps.store.record("unsubscribed", rec, details, now);
      return { recipient: rec, recorded: true, suppressed };
    });
    if (out.recorded) this.logLine("unsubscribed", rec, { ...details, suppressed: out.suppressed });
    return out;
  }

  private hit(type: "clicked" | "opened", hit: TrackedRecipient, details: Record<string, unknown>): Recorded | null {
    const rec = this.recipientOf(hit);
    if (!rec) return null;
    const now = this.now();
    this.deps.transaction(() => this.deps.store.record(type, rec, details, now));
    this.logLine(type, rec, details);
    return { recipient: rec, recorded: true };
  }

  private logLine(type: EngagementType, rec: EngagedRecipient, details: Record<string, unknown>): void {
    this.deps.log.info("tracking", {
      type, queue_id: rec.messageId, message_id: rec.messageIdHeader ?? null, user: this.deps.userName?.(rec.userId) ?? null,
      recipient_id: rec.id, recipient: rec.address, ...details,
    });
  }
}

function clientDetails(client: Client): Record<string, unknown> {
  return {
    ...(client.userAgent ? { user_agent: client.userAgent.slice(0, MAX_USER_AGENT) } : {}),
    ...(client.ip ? { client_ip: client.ip } : {}),
  };
}
