/**
 * @module queue/enqueue — durably stores a message and one row per recipient, with `queued`/`suppressed`
 * events, and resolves only once the commit is on disk. Submissions arriving together share one commit (group
 * commit), and commits made while the WAL is being synced share the next sync (db/durable.ts).
 */
import type { Database, Statement } from "bun:sqlite";
import { commitDurably, whenSyncIdle } from "../db/client.ts";
import type { EventLabels, EventRecorder } from "../events/record.ts";
import { addressKey, domainOf } from "../mail/address.ts";
import { newMessageId, newRecipientId, type MessageId, type RecipientId, type UserId } from "../mail/ids.ts";
import type { HealthReporter } from "../observe/health.ts";
import type { BodyFiles, BodyPlace } from "./bodies.ts";
import { handedOver, recentBodies } from "./handoff.ts";

export type MessageSource = "smtp" | "api" | "dsn";

export interface MessageOptions {
  inlineCss: boolean;
  trackClicks: boolean;
  trackOpens: boolean;
  trackBounces: boolean;
  /** List-Unsubscribe with one-click (RFC 8058) per recipient */
  unsubscribe: boolean;
}

export interface NewMessage {
  userId: UserId | null;
  /** "" for the null sender */
  envelopeFrom: string;
  recipients: string[];
  /** keys (mail/address.ts addressKey) of the `recipients` on the sender's suppression list */
  suppressed: ReadonlySet<string>;
  /** the prepared MIME message, CRLF line ends */
  body: Buffer;
  subject: string;
  /** the Message-ID field's `<id@host>`, when it has one */
  messageIdHeader?: string;
  source: MessageSource;
  options: MessageOptions;
  /** the sender's labels (intake/labels.ts), carried by every event of the message */
  tag?: string | null;
  metadata?: Readonly<Record<string, string>>;
  idempotencyKey?: string;
  /** with `idempotencyKey`: the submission's fingerprint, so a repeat with another payload can be told apart */
  idempotencyHash?: string;
  /**
   * With `idempotencyKey`: the user's older message holding the same key, if created before this moment (ms),
   * gives it up, so the key then names the new message and later repeats are answered from it.
   */
  idempotencyExpiredBefore?: number;
}

/** `held`: an operator stopped it (`outpost queue hold`); no claim takes it until `queue release`. */
export type RecipientStatus = "queued" | "deferred" | "held" | "delivered" | "bounced" | "suppressed";

export interface EnqueuedRecipient {
  address: string;
  id: RecipientId;
  status: "queued" | "suppressed";
}

export interface EnqueuedMessage {
  id: MessageId;
  /** the RFC 5322 Message-ID stored with it, or null */
  messageIdHeader: string | null;
  recipients: EnqueuedRecipient[];
}

/** The user already has a message under this idempotency key: another submission with it raced this one in. */
export class IdempotencyKeyTaken extends Error {
  /** SQLite's code for the refusal: the store answered, it did not fail (observe/health.ts) */
  readonly code = "SQLITE_CONSTRAINT_UNIQUE";

  constructor(
    readonly key: string,
    cause: unknown,
  ) {
    super(`idempotency key ${JSON.stringify(key)} is already taken`, { cause });
  }
}

const NO_BYTES = Buffer.alloc(0);

/** SQLite's refusal of a second message under one (user, idempotency key): messages_idempotency. */
const KEY_TAKEN = /UNIQUE constraint failed: messages\.user_id, messages\.idempotency_key/;

interface Pending {
  msg: NewMessage;
  /** where its body was written, when in a body file (then the row keeps it empty) */
  place?: BodyPlace;
  resolve: (m: EnqueuedMessage) => void;
  reject: (e: unknown) => void;
}

/** The table holding message bodies, most of the database's size (serve's start-up check skips it: db/client.ts). */
export const MESSAGE_BODIES_TABLE = "messages";

export class Enqueuer {
  private pending: Pending[] = [];
  private scheduled = false;
  private insertMessage: Statement;
  private insertRecipient: Statement;
  private releaseKey: Statement;
  /**
   * called once each commit that stored mail is on disk (the delivery loop's wake-up, so new mail needn't wait for
   * a poll; mail is not sent before its sender is told it was stored)
   */
  onCommitted?: () => void;

  constructor(
    private sqlite: Database,
    private events: EventRecorder,
    private now: () => number = Date.now,
    /** told whether each submission reached the store (`/healthz`); mail made while settling reports with the settle */
    private health?: HealthReporter,
    /** where large bodies are written (serve's); without, every body is kept in its row */
    private bodies: BodyFiles | null = null,
  ) {
    this.insertMessage = sqlite.prepare(
      `INSERT INTO messages (id, user_id, created_at, envelope_from, subject, size, body, source,
         inline_css, track_clicks, track_opens, track_bounces, unsubscribe, idempotency_key, message_id_header,
         idempotency_hash, tag, metadata, body_file, body_offset)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.releaseKey = sqlite.prepare(
      "UPDATE messages SET idempotency_key = NULL WHERE user_id IS ? AND idempotency_key = ? AND created_at < ?",
    );
    this.insertRecipient = sqlite.prepare(
      `INSERT INTO recipients (id, message_id, address, address_key, domain, status, attempts, next_attempt_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)`,
    );
  }

  /** Resolves after the message is committed and on disk; rejects if it is not stored, or not shown durable. */
  enqueue(msg: NewMessage): Promise<EnqueuedMessage> {
    const stored = new Promise<EnqueuedMessage>((resolve, reject) => {
      this.pending.push({ msg, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // let the other sessions' submissions of this tick, and those arriving while the WAL is being synced (this
        // commit waits for the next sync either way), join the same commit
        setImmediate(() => whenSyncIdle(this.sqlite, () => this.flush()));
      }
    });
    const health = this.health;
    if (health) stored.then(() => health.succeeded(), (e: unknown) => health.failed(e));
    return stored;
  }

  /**
   * Stores the message now, in a savepoint of the caller's transaction (its own when there is none), and
   * returns it: durable only once that transaction commits. For mail made while settling (DSNs), so the
   * notice commits with the bounce that caused it, or neither does.
   */
  enqueueNow(msg: NewMessage): EnqueuedMessage {
    const stored = this.sqlite.transaction(() => this.write(msg))();
    // the caller's transaction is synchronous, so it has ended by the time this runs
    setImmediate(() => this.onCommitted?.());
    return stored;
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    const files = this.bodies;
    try {
      for (const p of batch) if (files?.takes(p.msg.body.length)) p.place = files.append(p.msg.body);
    } catch (e) {
      files?.settled(batch.map((p) => p.place));
      for (const p of batch) p.reject(e);
      return;
    }
    if (!files || !batch.some((p) => p.place)) return this.commitBatch(batch);
    // a row naming a body file is committed only once that body is on disk: any sync of the WAL (a checkpoint's
    // too) may make the row durable, and a durable row must never name bytes a power cut could take back
    const settled = () => files.settled(batch.map((p) => p.place));
    files.synced().then(
      () =>
        whenSyncIdle(this.sqlite, () => {
          this.commitBatch(batch);
          settled();
        }),
      (e: unknown) => {
        settled();
        for (const p of batch) p.reject(e);
      },
    );
  }

  private commitBatch(batch: Pending[]): void {
    let commit: { value: Array<EnqueuedMessage | { error: unknown }>; durable: Promise<void> };
    try {
      commit = this.commit(batch);
    } catch (e) {
      for (const p of batch) p.reject(e);
      return;
    }
    const results = commit.value;
    // committed (a claim may see it before the sync ends): delivery may take the body instead of reading it back.
    // Not one with no recipient to deliver to (all suppressed): no claim would take it, it would only hold memory
    results.forEach((r, i) => {
      if (!("error" in r) && r.recipients.some((x) => x.status === "queued")) recentBodies.put(r.id, handedOver(batch[i]!.msg, r));
    });
    // the answer (250 / 202) waits for the disk: the sync runs off this thread, other work goes on meanwhile
    commit.durable.then(
      () => {
        batch.forEach((p, i) => {
          const r = results[i]!;
          if ("error" in r) p.reject(r.error);
          else p.resolve(r);
        });
        this.onCommitted?.();
      },
      // committed but not shown to be on disk: the clients are told to try again (a duplicate at worst)
      (e: unknown) => {
        for (const p of batch) p.reject(e);
      },
    );
  }

  /** The batch in one transaction; a failure in it rolls it back, and it is redone with a savepoint per message. */
  private commit(batch: Pending[]): { value: Array<EnqueuedMessage | { error: unknown }>; durable: Promise<void> } {
    try {
      // the usual case: every message of the batch is fine, so no savepoint per message is needed
      return commitDurably(this.sqlite, () => this.sqlite.transaction(() => batch.map((p) => this.write(p.msg, p.place)))());
    } catch {
      // something failed and the batch rolled back: redo it with one savepoint each, so only that one fails
      return commitDurably(this.sqlite, () => this.sqlite.transaction(() => batch.map((p) => this.insertOne(p.msg, p.place)))());
    }
  }

  /** One message inside a savepoint, so one bad submission does not fail the others in its batch. */
  private insertOne(m: NewMessage, place?: BodyPlace): EnqueuedMessage | { error: unknown } {
    try {
      return this.sqlite.transaction(() => this.write(m, place))();
    } catch (error) {
      // SQLite rolls the whole transaction back on some errors (disk full, I/O error): the batch is lost, and the
      // commit would fail with "no transaction is active", hiding why; the real error is the batch's answer
      if (!this.sqlite.inTransaction) throw error;
      if (m.idempotencyKey !== undefined && error instanceof Error && KEY_TAKEN.test(error.message)) {
        return { error: new IdempotencyKeyTaken(m.idempotencyKey, error) };
      }
      return { error };
    }
  }

  private write(m: NewMessage, place?: BodyPlace): EnqueuedMessage {
    const now = this.now();
    const id = newMessageId(now);
    const o = m.options;
    if (m.idempotencyKey !== undefined && m.idempotencyExpiredBefore !== undefined) {
      this.releaseKey.run(m.userId, m.idempotencyKey, m.idempotencyExpiredBefore);
    }
    const labels = storedLabels(m);
    this.insertMessage.run(id, m.userId, now, m.envelopeFrom, m.subject, m.body.length, place ? NO_BYTES : m.body, m.source,
      o.inlineCss, o.trackClicks, o.trackOpens, o.trackBounces, o.unsubscribe, m.idempotencyKey ?? null, m.messageIdHeader ?? null,
      m.idempotencyHash ?? null, labels.tag, labels.metadata, place?.file ?? null, place?.offset ?? null);
    const recipients = m.recipients.map((address): EnqueuedRecipient => {
      const rid = newRecipientId(now);
      const key = addressKey(address);
      const status = m.suppressed.has(key) ? "suppressed" : "queued";
      this.insertRecipient.run(rid, id, address, key, domainOf(address), status, now, now);
      this.events.record({ type: status, messageId: id, recipientId: rid, recipient: address, userId: m.userId, time: now, labels });
      return { address, id: rid, status };
    });
    return { id, messageIdHeader: m.messageIdHeader ?? null, recipients };
  }
}

/** The labels as the messages and events tables keep them: metadata as JSON text, null when empty. */
function storedLabels(m: NewMessage): EventLabels {
  const metadata = m.metadata && Object.keys(m.metadata).length > 0 ? JSON.stringify(m.metadata) : null;
  return { tag: m.tag ?? null, metadata };
}
