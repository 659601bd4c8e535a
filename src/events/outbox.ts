/**
 * @module events/outbox — the webhook outbox's reads and writes: leasing due rows (one message's events in order),
 * settling them, giving back a dead process's leases, marking the rows of removed hooks, pruning finished rows,
 * and the per-hook summary `outpost webhook list` shows. Rows are written with their event by events/record.ts.
 */
import type { Database, Statement } from "bun:sqlite";
import type { UserId } from "../mail/ids.ts";
import { EVENT_COLUMNS, renderEvent, type EventJson, type EventRow } from "./query.ts";

/** A leased row and the EVENT to send. */
export interface OutboxItem {
  id: number;
  hook: string;
  messageId: string;
  /** failed attempts so far */
  attempts: number;
  /** when its 24 h window began */
  startedAt: number;
  event: EventJson;
  /** the event's user (for the log line) */
  userId: UserId | null;
}

export interface HookSummary {
  hook: string;
  /** the URL of its newest row (for a hook no longer configured) */
  url: string;
  pending: number;
  delivered: number;
  expired: number;
  orphaned: number;
  /** the first failed attempt of the oldest row still pending after one; null when none is failing */
  failingSince: number | null;
  /** the newest error of a row not delivered (pending or expired), and when */
  lastError: string | null;
  lastErrorAt: number | null;
}

interface ClaimRow {
  id: number;
  event_id: number;
  message_id: string;
  attempts: number;
  created_at: number;
}

const PRUNE_CHUNK = 10_000;

export class Outbox {
  private claimDue: Statement<ClaimRow, [{ hook: string; now: number; limit: number; lease: number }]>;
  private event: Statement<EventRow & { user_id: number | null }, [number]>;
  private markDelivered: Statement;
  private markRetry: Statement;
  private markExpired: Statement;
  /** the message's later rows for the hook follow a settled row: due with it (retry) or at once (finished) */
  private pushLater: Statement;
  private pullLater: Statement;

  constructor(private sqlite: Database) {
    // a row waits while an earlier row of the same message and hook is pending (in flight included): events of
    // one message reach a hook in the order they happened
    this.claimDue = sqlite.prepare(`
      UPDATE webhook_outbox SET lease_until = $lease, next_attempt_at = $lease
      WHERE id IN (
        SELECT o.id FROM webhook_outbox o
        WHERE o.hook = $hook AND o.state IS NULL AND o.next_attempt_at <= $now AND (o.lease_until IS NULL OR o.lease_until <= $now)
          AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                          WHERE p.hook = o.hook AND p.message_id = o.message_id AND p.state IS NULL AND p.id < o.id)
        ORDER BY o.next_attempt_at, o.id LIMIT $limit)
      RETURNING id, event_id, message_id, attempts, created_at`);
    this.event = sqlite.prepare(`SELECT ${EVENT_COLUMNS}, user_id FROM events WHERE id = ?`);
    this.markDelivered = sqlite.prepare(`
      UPDATE webhook_outbox SET state = 'delivered', lease_until = NULL, last_attempt_at = $now, finished_at = $now
      WHERE id = $id AND state IS NULL`);
    this.markRetry = sqlite.prepare(`
      UPDATE webhook_outbox SET lease_until = NULL, attempts = attempts + 1, next_attempt_at = $next, last_error = $error,
        last_attempt_at = $now, failed_at = coalesce(failed_at, $now)
      WHERE id = $id AND state IS NULL`);
    this.markExpired = sqlite.prepare(`
      UPDATE webhook_outbox SET state = 'expired', lease_until = NULL, attempts = attempts + 1, last_error = $error,
        last_attempt_at = $now, failed_at = coalesce(failed_at, $now), finished_at = $now
      WHERE id = $id AND state IS NULL`);
    this.pushLater = sqlite.prepare(`
      UPDATE webhook_outbox SET next_attempt_at = max(next_attempt_at, $at)
      WHERE hook = $hook AND message_id = $message AND state IS NULL AND id > $id`);
    this.pullLater = sqlite.prepare(`
      UPDATE webhook_outbox SET next_attempt_at = min(next_attempt_at, $at)
      WHERE hook = $hook AND message_id = $message AND state IS NULL AND id > $id AND lease_until IS NULL`);
  }

  /** Leases up to `limit` due rows of `hook` until `leaseUntil`; a dead process's leases run out then. */
  claim(hook: string, now: number, limit: number, leaseUntil: number): OutboxItem[] {
    if (limit <= 0) return [];
    const rows = this.sqlite.transaction(() => this.claimDue.all({ hook, now, limit, lease: leaseUntil })).immediate();
    return rows.flatMap((r) => {
      const event = this.event.get(r.event_id);
      // events are never deleted; a row without one has nothing to send
      if (!event) {
        this.expire({ id: r.id, hook, messageId: r.message_id }, now, `event ${r.event_id} not found`);
        return [];
      }
      return [{
        id: r.id, hook, messageId: r.message_id, attempts: r.attempts, startedAt: r.created_at, event: renderEvent(event),
        userId: event.user_id as UserId | null,
      }];
    });
  }

  /** A 2xx: the row is done, and the message's next event for this hook may go at once. */
  delivered(item: Pick<OutboxItem, "id" | "hook" | "messageId">, now: number): void {
    this.sqlite.transaction(() => {
      this.markDelivered.run({ id: item.id, now });
      this.pullLater.run({ hook: item.hook, message: item.messageId, id: item.id, at: now });
    }).immediate();
  }

  /** A failed attempt, tried again at `next`; the message's later events for this hook wait until then too. */
  retry(item: Pick<OutboxItem, "id" | "hook" | "messageId">, now: number, error: string, next: number): void {
    this.sqlite.transaction(() => {
      this.markRetry.run({ id: item.id, now, error, next });
      this.pushLater.run({ hook: item.hook, message: item.messageId, id: item.id, at: next });
    }).immediate();
  }

  /** A failed attempt past the row's 24 h: it gives up, and the message's next event for this hook goes at once. */
  expire(item: Pick<OutboxItem, "id" | "hook" | "messageId">, now: number, error: string): void {
    this.sqlite.transaction(() => {
      this.markExpired.run({ id: item.id, now, error });
      this.pullLater.run({ hook: item.hook, message: item.messageId, id: item.id, at: now });
    }).immediate();
  }

  /** Rows leased but not settled: due again now. For `serve`'s start, whose lock says their process is gone. */
  recoverLeases(now: number): number {
    return this.sqlite.prepare("UPDATE webhook_outbox SET lease_until = NULL, next_attempt_at = ? WHERE state IS NULL AND lease_until IS NOT NULL").run(now).changes;
  }

  /** Gives back leases that `stop` will not settle (their POST is still out), due at once for the next start. */
  release(ids: readonly number[], now: number): void {
    const stmt = this.sqlite.prepare("UPDATE webhook_outbox SET lease_until = NULL, next_attempt_at = ? WHERE id = ? AND state IS NULL");
    this.sqlite.transaction(() => {
      for (const id of ids) stmt.run(now, id);
    }).immediate();
  }

  /** Rows written before hooks had names carry only a URL: they become the rows of the hook with that URL. */
  adoptUnnamed(hooks: readonly { name: string; url: string }[]): number {
    const stmt = this.sqlite.prepare(`
      UPDATE webhook_outbox SET hook = $name,
        message_id = coalesce((SELECT message_id FROM events WHERE events.id = webhook_outbox.event_id), '')
      WHERE hook = '' AND url = $url`);
    let n = 0;
    this.sqlite.transaction(() => {
      for (const h of hooks) n += stmt.run({ name: h.name, url: h.url }).changes;
    }).immediate();
    return n;
  }

  /** Stops the pending rows of every hook not in `keep` (removed from the config); returns the count per hook. */
  orphan(keep: readonly string[], now: number): Map<string, number> {
    const rows = this.sqlite
      .query<{ hook: string }, [number, string]>(`
        UPDATE webhook_outbox SET state = 'orphaned', lease_until = NULL, finished_at = ?
        WHERE state IS NULL AND hook NOT IN (SELECT value FROM json_each(?)) RETURNING hook`)
      .all(now, JSON.stringify(keep));
    const counts = new Map<string, number>();
    for (const { hook } of rows) counts.set(hook, (counts.get(hook) ?? 0) + 1);
    return counts;
  }

  /** Deletes finished rows (delivered, expired, orphaned) that finished before `before`, a chunk per commit. */
  prune(before: number): number {
    const stmt = this.sqlite.prepare(`
      DELETE FROM webhook_outbox WHERE id IN (
        SELECT id FROM webhook_outbox WHERE state IS NOT NULL AND finished_at < ? LIMIT ${PRUNE_CHUNK})`);
    let total = 0;
    for (let n = PRUNE_CHUNK; n === PRUNE_CHUNK; total += n) n = stmt.run(before).changes;
    return total;
  }

  /**
   * `outpost webhook retry NAME`: expired and orphaned rows start again (a new 24 h window, the schedule from its
   * start), and pending rows waiting after a failure are due now. Returns how many rows were touched.
   */
  retryHook(hook: string, now: number): number {
    return this.sqlite.transaction(() => {
      const restarted = this.sqlite.prepare(`
        UPDATE webhook_outbox SET state = NULL, finished_at = NULL, attempts = 0, failed_at = NULL, lease_until = NULL,
          created_at = $now, next_attempt_at = $now
        WHERE hook = $hook AND state IN ('expired', 'orphaned')`).run({ hook, now }).changes;
      const hurried = this.sqlite.prepare(`
        UPDATE webhook_outbox SET next_attempt_at = $now
        WHERE hook = $hook AND state IS NULL AND attempts > 0 AND lease_until IS NULL AND next_attempt_at > $now`).run({ hook, now }).changes;
      return restarted + hurried;
    }).immediate();
  }

  /** Pending rows per hook (the `outpost_webhook_pending` gauge). */
  pendingByHook(): Map<string, number> {
    const rows = this.sqlite.query<{ hook: string; n: number }, []>("SELECT hook, count(*) AS n FROM webhook_outbox WHERE state IS NULL GROUP BY hook").all();
    return new Map(rows.map((r) => [r.hook, r.n]));
  }

  /** One summary per hook that has rows (a read of the whole outbox: for the CLI, not for a hot path). */
  summary(): HookSummary[] {
    const counts = this.sqlite.query<Omit<HookSummary, "lastError" | "lastErrorAt">, []>(`
      SELECT hook, (SELECT url FROM webhook_outbox n WHERE n.hook = o.hook ORDER BY n.id DESC LIMIT 1) AS url,
        count(*) FILTER (WHERE state IS NULL) AS pending,
        count(*) FILTER (WHERE state = 'delivered') AS delivered,
        count(*) FILTER (WHERE state = 'expired') AS expired,
        count(*) FILTER (WHERE state = 'orphaned') AS orphaned,
        min(failed_at) FILTER (WHERE state IS NULL) AS failingSince
      FROM webhook_outbox o GROUP BY hook ORDER BY hook`).all();
    // SQLite: with max(), the bare columns come from the row holding the maximum
    const errors = this.sqlite.query<{ hook: string; last_error: string; at: number }, []>(`
      SELECT hook, last_error, max(last_attempt_at) AS at FROM webhook_outbox
      WHERE last_error IS NOT NULL AND state IS NOT 'delivered' GROUP BY hook`).all();
    const byHook = new Map(errors.map((e) => [e.hook, e]));
    return counts.map((c) => ({ ...c, lastError: byHook.get(c.hook)?.last_error ?? null, lastErrorAt: byHook.get(c.hook)?.at ?? null }));
  }
}
