/**
 * @module queue/claim — leases due recipients to the delivery loop, and gives leases back.
 *
 * A lease is `lease_until` in the recipient's row. Claiming also moves `next_attempt_at` to the lease's expiry:
 * a leased row then leaves the front of the due indexes (so the next claim does not wade through work already in
 * flight), and if the process dies (`kill -9`) the row comes due again when the lease runs out — or at once, when
 * the next `serve` calls recoverLeases() at start. Settling (queue/settle.ts) or release() clears the lease and
 * sets the real next time.
 *
 * Fairness (Postfix qmgr: deferred mail must not slow down new mail): a claim takes first attempts (`queued`) and
 * retries (`deferred`) each through its own partial index (`recipients_new`, `recipients_retry`), up to half the
 * claim from each side and the rest from the other when one side has fewer. A backlog of retries all due at once
 * therefore never stands in front of new mail, and new mail never starves retries. Every query is a range over a
 * partial index of pending rows only, so a queue of a million recipients costs an index seek, never a table scan.
 *
 * Backlogs: the scheduler excludes domains that already have plenty of work in memory, and a claim looks at a
 * bounded window of the oldest due rows. When that window is all excluded rows (a campaign to one busy domain),
 * the claim steps from domain to domain through `recipients_domain` instead, round-robin from where the last such
 * claim stopped, so mail for every other domain still goes out at once (Postfix qmgr: one destination's backlog
 * must not hold up the others).
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
   * How many of the oldest due rows of each side (new, retry) one claim looks at when `excludeDomains` is given
   * (default 20,000). It bounds the cost of a claim when a busy, excluded domain owns most of the due work; when
   * the window is full of excluded rows, the claim goes on domain by domain (see the module comment).
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

type Pending = "queued" | "deferred";

/** Past a backlog: at most this many domains looked at per claim, and this many rows taken from each. */
const DOMAINS_PER_CLAIM = 200;
const ROWS_PER_DOMAIN = 50;

/** Due rows of one status; the matching partial index covers exactly that status. */
const due = (status: Pending) =>
  `status = '${status}' AND next_attempt_at <= $now AND (lease_until IS NULL OR lease_until <= $now)`;
const COLUMNS = "id, message_id, address, domain, attempts";

type DueParams = { now: number; limit: number };
type DueExcludingParams = DueParams & { scan: number; exclude: string };

/** The two reads of one side of the queue (first attempts or retries), both bound to that side's index. */
interface DueReads {
  plain: Statement<ClaimRow, [DueParams]>;
  excluding: Statement<ClaimRow, [DueExcludingParams]>;
}

export class QueueClaimer {
  private fresh: DueReads;
  private retry: DueReads;
  private lease: Statement;
  private releaseOne: Statement;
  private recover: Statement;
  private nextDue: Statement<{ at: number }, []>;
  private message: Statement<MessageRow, [string]>;
  private scanWindow: number;
  private windowCount: { fresh: Statement<{ n: number }, [DueParams]>; retry: Statement<{ n: number }, [DueParams]> };
  private nextDomain: Statement<{ domain: string }, [{ after: string }]>;
  private dueInDomain: Statement<ClaimRow, [DueParams & { domain: string }]>;
  /** the last domain a claim past a backlog looked at: the next one starts after it */
  private domainCursor = "";
  /** which side gets the odd row of an odd-sized claim; it alternates, so a claim of 1 at a time serves both */
  private oddToRetry = false;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
    opts: ClaimOptions = {},
  ) {
    this.scanWindow = opts.scanWindow ?? 20_000;
    this.fresh = this.dueReads("recipients_new", "queued");
    this.retry = this.dueReads("recipients_retry", "deferred");
    const count = (index: string, status: Pending) =>
      sqlite.query<{ n: number }, [DueParams]>(
        `SELECT count(*) AS n FROM (SELECT 1 FROM recipients INDEXED BY ${index} WHERE ${due(status)} LIMIT $limit)`,
      );
    this.windowCount = { fresh: count("recipients_new", "queued"), retry: count("recipients_retry", "deferred") };
    // the first pending row after a domain is the next domain: one index seek per domain, whatever its size
    this.nextDomain = sqlite.query(
      `SELECT domain FROM recipients INDEXED BY recipients_domain
       WHERE status IN ('queued','deferred') AND domain > $after ORDER BY domain LIMIT 1`,
    );
    this.dueInDomain = sqlite.query(
      `SELECT ${COLUMNS} FROM recipients INDEXED BY recipients_domain
       WHERE domain = $domain AND status IN ('queued','deferred') AND next_attempt_at <= $now
         AND (lease_until IS NULL OR lease_until <= $now)
       ORDER BY next_attempt_at LIMIT $limit`,
    );
    this.lease = sqlite.query(
      "UPDATE recipients SET lease_until = ?1, next_attempt_at = ?1, updated_at = ?2 WHERE id = ?3",
    );
    // status is left alone: a released first attempt stays 'queued' (and on the new-mail side)
    this.releaseOne = sqlite.query(
      `UPDATE recipients SET lease_until = NULL, next_attempt_at = ?1, updated_at = ?2
       WHERE id = ?3 AND status IN ('queued','deferred')`,
    );
    // a live lease always has next_attempt_at = lease_until (claim sets both), so the range on recipients_due
    // skips every row due now; a row outside it would still come back when its lease runs out
    this.recover = sqlite.query(
      `UPDATE recipients INDEXED BY recipients_due SET lease_until = NULL, next_attempt_at = ?1, updated_at = ?1
       WHERE status IN ('queued','deferred') AND next_attempt_at > ?1 AND lease_until > ?1`,
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

  private dueReads(index: string, status: Pending): DueReads {
    return {
      plain: this.sqlite.query(
        `SELECT ${COLUMNS} FROM recipients INDEXED BY ${index} WHERE ${due(status)} ORDER BY next_attempt_at LIMIT $limit`,
      ),
      // the inner LIMIT bounds the rows looked at; the outer filter drops busy domains
      excluding: this.sqlite.query(
        `SELECT ${COLUMNS} FROM (
           SELECT ${COLUMNS}, next_attempt_at FROM recipients INDEXED BY ${index}
           WHERE ${due(status)} ORDER BY next_attempt_at LIMIT $scan
         ) WHERE domain NOT IN (SELECT value FROM json_each($exclude)) ORDER BY next_attempt_at LIMIT $limit`,
      ),
    };
  }

  /**
   * Leases up to `limit` due recipients until now + `leaseMs`: up to half from first attempts and half from
   * retries (each side oldest `next_attempt_at` first), the other side filling whatever one side leaves. First
   * attempts come first in the result. Two claims never return the same row while its lease holds (the reads
   * and the lease share one IMMEDIATE transaction, which also excludes other processes on the same database).
   */
  claim(limit: number, leaseMs: number, excludeDomains?: ReadonlySet<string>): ClaimedRecipient[] {
    if (limit <= 0) return [];
    const exclude = excludeDomains && excludeDomains.size > 0 ? JSON.stringify([...excludeDomains]) : null;
    const retryShare = limit % 2 === 1 && this.oddToRetry ? Math.ceil(limit / 2) : Math.floor(limit / 2);
    if (limit % 2 === 1) this.oddToRetry = !this.oddToRetry;
    const run = this.sqlite.transaction((): ClaimedRecipient[] => {
      const now = this.now();
      const fresh = this.readDue(this.fresh, now, limit, exclude);
      const retries = this.readDue(this.retry, now, limit - Math.min(fresh.length, limit - retryShare), exclude);
      const rows = [...fresh.slice(0, limit - retries.length), ...retries];
      if (exclude !== null && rows.length < limit && this.windowFull(now)) {
        rows.push(...this.readPastBacklog(now, limit - rows.length, excludeDomains!, new Set(rows.map((r) => r.id))));
      }
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

  private readDue(side: DueReads, now: number, limit: number, exclude: string | null): ClaimRow[] {
    if (limit <= 0) return [];
    if (exclude === null) return side.plain.all({ now, limit });
    return side.excluding.all({ now, limit, scan: Math.max(this.scanWindow, limit), exclude });
  }

  /** True when a side's scan window holds nothing but due rows: there may be more behind the excluded ones. */
  private windowFull(now: number): boolean {
    const limit = this.scanWindow;
    return this.windowCount.fresh.get({ now, limit })!.n >= limit || this.windowCount.retry.get({ now, limit })!.n >= limit;
  }

  /** Due rows of domains not excluded, a few per domain, round-robin over domains from the cursor. */
  private readPastBacklog(now: number, limit: number, excluded: ReadonlySet<string>, taken: Set<string>): ClaimRow[] {
    const out: ClaimRow[] = [];
    let after = this.domainCursor;
    let wrapped = after === "";
    for (let visited = 0; out.length < limit && visited < DOMAINS_PER_CLAIM; visited++) {
      const domain = this.nextDomain.get({ after })?.domain;
      if (domain === undefined || (wrapped && this.domainCursor !== "" && domain > this.domainCursor)) {
        if (wrapped) break;
        wrapped = true;
        after = "";
        continue;
      }
      after = domain;
      if (excluded.has(domain)) continue;
      const rows = this.dueInDomain.all({ domain, now, limit: Math.min(ROWS_PER_DOMAIN, limit - out.length) });
      out.push(...rows.filter((r) => !taken.has(r.id)));
    }
    this.domainCursor = after;
    return out;
  }

  /**
   * Makes every recipient leased by a previous process due now, and returns how many. Only for the start of the
   * single process that serves this database: a lease held by a second live process would be broken, and its
   * recipients sent twice (still at least once, never lost). Without it they wait for their leases to run out.
   */
  recoverLeases(): number {
    return this.recover.run(this.now()).changes;
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
