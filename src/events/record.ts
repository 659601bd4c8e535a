/** @module events/record — appends events (and their webhook outbox rows) inside the caller's transaction. */
import type { Database, Statement } from "bun:sqlite";
import type { EventType } from "../config/schema.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";

export interface EventDetails {
  mx?: string;
  reply?: string;
  status?: string;
  url?: string;
  user_agent?: string;
  [k: string]: unknown;
}

/** The message's labels as stored: `metadata` is a JSON object's text; null when the message has none. */
export interface EventLabels {
  tag: string | null;
  metadata: string | null;
}

export interface NewEvent {
  type: EventType;
  messageId: MessageId;
  recipientId?: RecipientId | null;
  recipient?: string | null;
  userId?: UserId | null;
  details?: EventDetails;
  /** ms since epoch; defaults to now */
  time?: number;
  /** the message's tag and metadata, copied into the event so it carries them wherever it is read */
  labels?: EventLabels;
}

/** A `[[webhook]]` as `serve` runs it: its `user` resolved to an id (null: every user's events). */
export interface Webhook {
  name: string;
  url: string;
  events: readonly EventType[];
  userId: UserId | null;
  secret: string;
}

/** Does this event get an outbox row for this hook? */
export function wants(hook: Pick<Webhook, "events" | "userId">, type: EventType, userId: UserId | null): boolean {
  return hook.events.includes(type) && (hook.userId === null || hook.userId === userId);
}

/**
 * Writes events. It never opens a transaction of its own: the caller commits the state change and
 * its event together, so history and state cannot disagree.
 */
export class EventRecorder {
  private insertEvent: Statement;
  private insertOutbox: Statement;

  constructor(
    sqlite: Database,
    private webhooks: readonly Webhook[] = [],
  ) {
    this.insertEvent = sqlite.prepare(
      // the new id is the run's last insert rowid: RETURNING would make SQLite build a result row for every event
      "INSERT INTO events (type, time, message_id, recipient_id, recipient, user_id, details, tag, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    this.insertOutbox = sqlite.prepare(
      "INSERT INTO webhook_outbox (event_id, hook, message_id, url, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
  }

  /** A reload (SIGHUP): events recorded from now on go to these webhooks (rows already written name their hook). */
  reconfigure(webhooks: readonly Webhook[]): void {
    this.webhooks = webhooks;
  }

  /** Returns the new event's id (the cursor value). */
  record(e: NewEvent): number {
    const time = e.time ?? Date.now();
    const id = Number(
      this.insertEvent.run(
        e.type,
        time,
        e.messageId,
        e.recipientId ?? null,
        e.recipient ?? null,
        e.userId ?? null,
        e.details === undefined ? "{}" : JSON.stringify(e.details),
        e.labels?.tag ?? null,
        e.labels?.metadata ?? null,
      ).lastInsertRowid,
    );
    for (const hook of this.webhooks) {
      if (wants(hook, e.type, e.userId ?? null)) this.insertOutbox.run(id, hook.name, e.messageId, hook.url, time, time);
    }
    return id;
  }
}
