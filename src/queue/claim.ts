/**
 * @module queue/claim — leases due recipients to the delivery loop, and gives leases back.
 *
 * A lease is `lease_until` in the recipient's row. Claiming also moves `next_attempt_at` to the lease's expiry:
 * a leased row then leaves the front of the `recipients_due` index (so the next claim does not wade through work
 * already in flight), and if the process dies (`kill -9`) the row simply comes due again when the lease runs
 * out — no sweeper needed. Settling (queue/settle.ts) or release() clears the lease and sets the real next time.
 * Every query here is a range over the partial index `recipients_due` (pending rows only), so a queue of a
 * million recipients costs an index seek, never a table scan.
 */
import type { Database, Statement } from "bun:sqlite";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { MessageOptions } from "./enqueue.ts";

export interface ClaimedRecipient {
  id: RecipientId;
  messageId: MessageId;
  address: string;
  domain: string;
  /** attempts made before this one */
  attempts: number;
}

export interface StoredMessage {
  id: MessageId;
  userId: UserId | null;
  envelopeFrom: string;
  body: Buffer;
  createdAt: number;
  options: MessageOptions;
}

export interface ClaimOptions {
  /**
   * How many of the oldest due rows one claim looks at when `excludeDomains` is given (default 20,000). It bounds
   * the cost of a claim when a busy, excluded domain owns most of the due work; the price is that other domains'
   * rows lying behind that many excluded rows wait until the excluded ones move (the scheduler should release
   * work it cannot start with a later `at` rather than exclude the same domain forever).
   */
  scanWindow?: number;
}

interface ClaimRow {
  id: string;
  message_id: string;
  address: string;
  domain: string;
  attempts: number;
}

interface MessageRow {
  id: string;
  user_id: number | null;
  envelope_from: string;
  body: Uint8Array;
  created_at: number;
  inline_css: number;
  track_clicks: number;
  track_opens: number;
  track_bounces: number;
}

const DUE = "status IN ('queued','deferred') AND next_attempt_at <= $now AND (lease_until IS NULL OR lease_until <= $now)";
const COLUMNS = "id, message_id, address, domain, attempts";

export class QueueClaimer {
  private selectDue: Statement<ClaimRow, [{ now: number; limit: number }]>;
  private selectDueExcluding: Statement<ClaimRow, [{ now: number; limit: number; scan: number; exclude: string }]>;
  private lease: Statement;
  private releaseOne: Statement;
  private nextDue: Statement<{ at: number }, []>;
  private message: Statement<MessageRow, [string]>;
  private scanWindow: number;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
    opts: ClaimOptions = {},
  ) {
    this.scanWindow = opts.scanWindow ?? 20_000;
    this.selectDue = sqlite.query(
      `SELECT ${COLUMNS} FROM recipients INDEXED BY recipients_due WHERE ${DUE} ORDER BY next_attempt_at LIMIT $limit`,
    );
    // the inner LIMIT bounds the rows looked at; the outer filter drops busy domains
    this.selectDueExcluding = sqlite.query(
      `SELECT ${COLUMNS} FROM (
         SELECT ${COLUMNS}, next_attempt_at FROM recipients INDEXED BY recipients_due
         WHERE ${DUE} ORDER BY next_attempt_at LIMIT $scan
       ) WHERE domain NOT IN (SELECT value FROM json_each($exclude)) ORDER BY next_attempt_at LIMIT $limit`,
    );
    this.lease = sqlite.query(
      "UPDATE recipients SET lease_until = ?1, next_attempt_at = ?1, updated_at = ?2 WHERE id = ?3",
    );
    this.releaseOne = sqlite.query(
      `UPDATE recipients SET lease_until = NULL, next_attempt_at = ?1, updated_at = ?2
       WHERE id = ?3 AND status IN ('queued','deferred')`,
    );
    this.nextDue = sqlite.query(
      `SELECT next_attempt_at AS at FROM recipients INDEXED BY recipients_due
       WHERE status IN ('queued','deferred') ORDER BY next_attempt_at LIMIT 1`,
    );
    this.message = sqlite.query(
      `SELECT id, user_id, envelope_from, body, created_at, inline_css, track_clicks, track_opens, track_bounces
       FROM messages WHERE id = ?`,
    );
  }

  /**
   * Leases up to `limit` due recipients, oldest `next_attempt_at` first, until now + `leaseMs`. Two claims never
   * return the same row while its lease holds (the read and the lease share one IMMEDIATE transaction, which
   * also excludes other processes on the same database).
   */
  claim(limit: number, leaseMs: number, excludeDomains?: ReadonlySet<string>): ClaimedRecipient[] {
    if (limit <= 0) return [];
    const run = this.sqlite.transaction((): ClaimedRecipient[] => {
      const now = this.now();
      const rows =
        excludeDomains && excludeDomains.size > 0
          ? this.selectDueExcluding.all({ now, limit, scan: Math.max(this.scanWindow, limit), exclude: JSON.stringify([...excludeDomains]) })
          : this.selectDue.all({ now, limit });
      const until = now + leaseMs;
      for (const r of rows) this.lease.run(until, now, r.id);
      return rows.map((r) => ({
        id: r.id as RecipientId,
        messageId: r.message_id as MessageId,
        address: r.address,
        domain: r.domain,
        attempts: r.attempts,
      }));
    });
    return run.immediate();
  }

  /** Gives leases back without counting an attempt (shutdown, throttle said wait). */
  release(ids: RecipientId[], at?: number): void {
    if (ids.length === 0) return;
    const now = this.now();
    const when = at ?? now;
    this.sqlite.transaction(() => {
      for (const id of ids) this.releaseOne.run(when, now, id);
    }).immediate();
  }

  /** When the next pending recipient is due (ms since epoch; may be in the past), or null if nothing is pending. */
  nextDueAt(): number | null {
    return this.nextDue.get()?.at ?? null;
  }

  loadMessage(id: MessageId): StoredMessage | null {
    const r = this.message.get(id);
    if (!r) return null;
    return {
      id: r.id as MessageId,
      userId: r.user_id as UserId | null,
      envelopeFrom: r.envelope_from,
      body: Buffer.from(r.body.buffer, r.body.byteOffset, r.body.byteLength),
      createdAt: r.created_at,
      options: {
        inlineCss: !!r.inline_css,
        trackClicks: !!r.track_clicks,
        trackOpens: !!r.track_opens,
        trackBounces: !!r.track_bounces,
      },
    };
  }
}
