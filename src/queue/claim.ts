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
 * Backlogs: the scheduler excludes domains by key — destinations held back (dead, backing off) and those that
 * already have plenty of work in memory (per side: a destination with a full lane of new mail still gets its due
 * retries). When the oldest due row of a side belongs to an excluded domain (a dead destination's million
 * recipients in front), the claim does not read past them: it steps from domain to domain through
 * `recipients_domain`, one seek per domain, skipping excluded domains by name, round-robin from where the last
 * such claim stopped, so mail for every other domain still goes out at once (Postfix qmgr: one destination's
 * backlog must not hold up the others). A claim therefore costs the same with a backlog of a thousand or a
 * million rows behind held-back destinations. When excluded rows are only mixed into the front, a claim looks at a
 * bounded window of the oldest due rows, and steps domain by domain past it when it is all excluded rows.
 * Destinations with a slow rate are *metered*: their domains are read by domain only, a few rows each, so a claim
 * never takes more of their mail than they can send before they are held back again.
 */
import type { Database, Statement } from "bun:sqlite";
import { withLazyCommit } from "../db/client.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { MessageOptions } from "./enqueue.ts";
import { claimedFrom, type ClaimRow } from "./claim-row.ts";
import { ExpiredRecipients, type ExpiredBatch } from "./expire.ts";
import { BODY_COLUMNS, bodyOf, type BodyColumns } from "./bodies.ts";
import { recentBodies } from "./handoff.ts";
import { eachPending } from "./pending.ts";

export interface ClaimedRecipient {
  id: RecipientId;
  messageId: MessageId;
  address: string;
  domain: string;
  /** attempts made before this one */
  attempts: number;
  /** when it was due before this claim moved it to the lease's expiry: putBack() restores it */
  dueAt: number;
}

/**
 * Domains a claim leaves out, per side: a destination may have plenty of new mail waiting in memory and still
 * want its due retries (and the other way round). A plain set leaves the domains out of both sides.
 */
export interface SideExclusions {
  fresh: ReadonlySet<string>;
  retry: ReadonlySet<string>;
  /**
   * Domains of destinations that can take only a message now and then (a slow rate): a claim reads them by
   * domain only, at most ROWS_PER_DOMAIN due rows of each per side, so it never takes more of their mail than
   * one round of the scheduler can send (unless a side leaves them out as well).
   */
  metered?: ReadonlySet<string>;
}

export interface StoredMessage {
  id: MessageId;
  userId: UserId | null;
  envelopeFrom: string;
  body: Buffer;
  createdAt: number;
  options: MessageOptions;
  /** the RFC 5322 Message-ID (none for mail stored before outpost kept it): the log lines carry it */
  messageIdHeader?: string | null;
}

export interface ClaimOptions {
  /**
   * How many of the oldest due rows of each side (new, retry) one claim looks at when `excludeDomains` is given
   * and the oldest due row is not excluded (default 500). It bounds the cost of a claim when excluded domains are
   * mixed into the front; when the window is full of excluded rows, the claim goes on domain by domain (see the
   * module comment).
   */
  scanWindow?: number;
}

/** The columns stored before the body: read without walking the body's overflow pages, as later ones are. */
interface MessageHead {
  id: string;
  user_id: number | null;
  created_at: number;
  envelope_from: string;
  size: number;
}

interface MessageRow extends BodyColumns {
  id: string;
  user_id: number | null;
  envelope_from: string;
  created_at: number;
  inline_css: number;
  track_clicks: number;
  track_opens: number;
  track_bounces: number;
  unsubscribe: number;
  message_id_header: string | null;
}

type Pending = "queued" | "deferred";

/**
 * Past a backlog, per side and claim: rows from at most this many domains, this many rows from each, and at most
 * this many domains looked at (one index seek each; domains with nothing due cost a seek and give nothing).
 */
const DOMAINS_PER_CLAIM = 200;
const ROWS_PER_DOMAIN = 50;
const VISITS_PER_CLAIM = 1_000;

/** Due rows of one status; the matching partial index covers exactly that status. */
const due = (status: Pending) =>
  `status = '${status}' AND next_attempt_at <= $now AND (lease_until IS NULL OR lease_until <= $now)`;
const COLUMNS = "id, message_id, address, domain, attempts, next_attempt_at";

type DueParams = { now: number; limit: number };
type DueExcludingParams = DueParams & { scan: number; exclude: string };

/**
 * One side of the queue (first attempts or retries): its reads, each bound to an index that holds only pending
 * rows, and its walk past an excluded backlog.
 */
interface Side {
  plain: Statement<ClaimRow, [DueParams]>;
  excluding: Statement<ClaimRow, [DueExcludingParams]>;
  /** how many of the side's first `limit` index entries are due (the scan window is full when all are) */
  window: Statement<{ n: number }, [DueParams]>;
  nextDomain: Statement<{ domain: string }, [{ after: string }]>;
  dueInDomain: Statement<ClaimRow, [DueParams & { domain: string }]>;
  /** the last domain a walk looked at: the next walk starts after it */
  cursor: string;
  /** the last walk ran out of budget before coming round: due rows may be waiting behind it */
  unfinished: boolean;
}

export class QueueClaimer {
  private fresh: Side;
  private retry: Side;
  private lease: Statement;
  private releaseOne: Statement;
  private releaseAll: Statement;
  private extendOne: Statement;
  private recover: Statement;
  private nextDue: Statement<{ at: number | null }, []>;
  private message: Statement<MessageRow, [string]>;
  private messageHead: Statement<MessageHead, [string]>;
  private scanWindow: number;
  /** which side gets the odd row of an odd-sized claim; it alternates, so a claim of 1 at a time serves both */
  private oddToRetry = false;
  private expired: ExpiredRecipients;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
    opts: ClaimOptions = {},
  ) {
    this.scanWindow = opts.scanWindow ?? 500;
    this.expired = new ExpiredRecipients(sqlite, now);
    this.fresh = this.side("recipients_new", "queued");
    this.retry = this.side("recipients_retry", "deferred");
    this.lease = sqlite.query(
      "UPDATE recipients SET lease_until = ?1, next_attempt_at = ?1, updated_at = ?2 WHERE id = ?3",
    );
    // status is left alone: a released first attempt stays 'queued' (and on the new-mail side)
    this.releaseOne = sqlite.query(
      `UPDATE recipients SET lease_until = NULL, next_attempt_at = ?1, updated_at = ?2
       WHERE id = ?3 AND status IN ('queued','deferred')`,
    );
    // a destination held back hands its whole lane back at once: one statement, each row by its primary key
    this.releaseAll = sqlite.query(
      `UPDATE recipients SET lease_until = NULL, next_attempt_at = ?1, updated_at = ?2
       WHERE id IN (SELECT value FROM json_each(?3)) AND status IN ('queued','deferred')`,
    );
    this.extendOne = sqlite.query(
      `UPDATE recipients SET lease_until = ?1, next_attempt_at = ?1, updated_at = ?2
       WHERE id = ?3 AND status IN ('queued','deferred')`,
    );
    // a live lease always has next_attempt_at = lease_until (claim sets both), so the range on each pending index
    // skips every row due now; a row outside it would still come back when its lease runs out
    this.recover = sqlite.query(
      `UPDATE recipients SET lease_until = NULL, next_attempt_at = ?1, updated_at = ?1 WHERE id IN (${eachPending(
        (from, inState) => `SELECT id FROM ${from} WHERE ${inState} AND next_attempt_at > ?1 AND lease_until > ?1`,
      )})`,
    );
    // the first entry of each pending index; min() of none is NULL
    this.nextDue = sqlite.query(
      `SELECT min(at) AS at FROM (${eachPending(
        (from, inState) => `SELECT * FROM (SELECT next_attempt_at AS at FROM ${from} WHERE ${inState} ORDER BY next_attempt_at LIMIT 1)`,
      )})`,
    );
    this.message = sqlite.query(
      `SELECT id, user_id, envelope_from, ${BODY_COLUMNS}, created_at, inline_css, track_clicks, track_opens, track_bounces,
         unsubscribe, message_id_header FROM messages WHERE id = ?`,
    );
    this.messageHead = sqlite.query("SELECT id, user_id, created_at, envelope_from, size FROM messages WHERE id = ?");
  }

  private side(index: string, status: Pending): Side {
    // recipients_domain is partial on both pending states: its own predicate must be in the WHERE to be usable
    const byDomain = `status IN ('queued','deferred') AND status = '${status}'`;
    return {
      plain: this.sqlite.query(
        `SELECT ${COLUMNS} FROM recipients INDEXED BY ${index} WHERE ${due(status)} ORDER BY next_attempt_at LIMIT $limit`,
      ),
      // the inner LIMIT bounds the rows looked at; the outer filter drops busy domains
      excluding: this.sqlite.query(
        `SELECT ${COLUMNS} FROM (
           SELECT ${COLUMNS} FROM recipients INDEXED BY ${index}
           WHERE ${due(status)} ORDER BY next_attempt_at LIMIT $scan
         ) WHERE domain NOT IN (SELECT value FROM json_each($exclude)) ORDER BY next_attempt_at LIMIT $limit`,
      ),
      window: this.sqlite.query(
        `SELECT count(*) AS n FROM (SELECT 1 FROM recipients INDEXED BY ${index} WHERE ${due(status)} LIMIT $limit)`,
      ),
      // the first pending row after a domain names the next domain: one index seek per domain, whatever its size.
      // Both sides ask for any pending row: with the index's own predicate only, SQLite reads no table row, so a
      // domain holding a million rows of the other side costs the same seek (a side's own rows are read per
      // domain, by dueInDomain, and only for domains not excluded)
      nextDomain: this.sqlite.query(
        `SELECT domain FROM recipients INDEXED BY recipients_domain
         WHERE status IN ('queued','deferred') AND domain > $after ORDER BY domain LIMIT 1`,
      ),
      dueInDomain: this.sqlite.query(
        `SELECT ${COLUMNS} FROM recipients INDEXED BY recipients_domain
         WHERE domain = $domain AND ${byDomain} AND next_attempt_at <= $now AND (lease_until IS NULL OR lease_until <= $now)
         ORDER BY next_attempt_at LIMIT $limit`,
      ),
      cursor: "",
      unfinished: false,
    };
  }

  /**
   * Leases up to `limit` due recipients until now + `leaseMs`: up to half from first attempts and half from
   * retries (each side oldest `next_attempt_at` first), the other side filling whatever one side leaves. First
   * attempts come first in the result. Two claims never return the same row while its lease holds (the reads
   * and the lease share one IMMEDIATE transaction, which also excludes other processes on the same database).
   * Its commit does not wait for the disk (`withLazyCommit`): a lease lost to a power cut only means a new claim.
   */
  claim(limit: number, leaseMs: number, exclude?: ReadonlySet<string> | SideExclusions): ClaimedRecipient[] {
    if (limit <= 0) return [];
    const sides = exclude === undefined ? null : isSideExclusions(exclude) ? exclude : { fresh: exclude, retry: exclude };
    const metered = sides?.metered ?? NONE;
    const [freshOut, retryOut] = sides === null ? [null, null] : [exclusion(sides.fresh, metered), exclusion(sides.retry, metered)];
    const retryShare = limit % 2 === 1 && this.oddToRetry ? Math.ceil(limit / 2) : Math.floor(limit / 2);
    if (limit % 2 === 1) this.oddToRetry = !this.oddToRetry;
    const run = this.sqlite.transaction((): ClaimedRecipient[] => {
      const now = this.now();
      const fresh = this.withMetered(this.fresh, now, limit, freshOut, metered, sides?.fresh);
      const retries = this.withMetered(this.retry, now, limit - Math.min(fresh.length, limit - retryShare), retryOut, metered, sides?.retry);
      const rows = [...fresh.slice(0, limit - retries.length), ...retries];
      const until = now + leaseMs;
      for (const r of rows) this.lease.run(until, now, r.id);
      return rows.map(claimedFrom);
    });
    // lazy (no fsync on this thread): a claim answers no client, and one lost to a power cut only leaves its
    // recipients unleased, due as before (serve's start clears leases anyway): claimed again, never lost
    return withLazyCommit(this.sqlite, () => run.immediate());
  }

  /**
   * Leases pending recipients at `domains` of messages made before `createdBefore` (queue/expire.ts): mail at
   * destinations held back as failing that has outlived its queue time, to be bounced without another attempt.
   */
  claimExpired(domains: readonly string[], createdBefore: number, limit: number, leaseMs: number): ExpiredBatch {
    return this.expired.claim(domains, createdBefore, limit, leaseMs);
  }

  /** True while a walk past an excluded backlog stopped at its budget: claim again soon rather than sleep. */
  get walkUnfinished(): boolean {
    return this.fresh.unfinished || this.retry.unfinished;
  }

  /** A side's rows (readSide), then a few due rows of each metered domain the side does not leave out. */
  private withMetered(side: Side, now: number, limit: number, out: Exclusion | null, metered: ReadonlySet<string>, excluded?: ReadonlySet<string>): ClaimRow[] {
    const rows = this.readSide(side, now, limit, out);
    for (const domain of metered) {
      if (rows.length >= limit) break;
      if (excluded?.has(domain)) continue;
      rows.push(...side.dueInDomain.all({ domain, now, limit: Math.min(ROWS_PER_DOMAIN, limit - rows.length) }));
    }
    return rows;
  }

  /** Up to `limit` due rows of one side, oldest first, then, when excluded rows fill its window, past them. */
  private readSide(side: Side, now: number, limit: number, excluded: Exclusion | null): ClaimRow[] {
    side.unfinished = false;
    if (limit <= 0) return [];
    if (excluded === null) return side.plain.all({ now, limit });
    // the oldest due row belongs to a held-back domain: the backlog is known by its key, and the claim goes
    // domain by domain at once instead of reading the held-back rows to find out
    const oldest = side.plain.get({ now, limit: 1 });
    if (oldest === null) return [];
    if (excluded.set.has(oldest.domain)) return this.walkPastBacklog(side, now, limit, excluded.set, new Set());
    const rows = side.excluding.all({ now, limit, scan: Math.max(this.scanWindow, limit), exclude: excluded.json });
    if (rows.length >= limit || side.window.get({ now, limit: this.scanWindow })!.n < this.scanWindow) return rows;
    const taken = new Set(rows.map((r) => r.id));
    return [...rows, ...this.walkPastBacklog(side, now, limit - rows.length, excluded.set, taken)];
  }

  /**
   * Due rows of domains not excluded, a few per domain, round-robin over the domains in name order: each walk
   * goes on from where the last one stopped, and may finish a round and begin the next, never more. A domain met
   * a second time in one walk (the only one with due mail, say) gives as many rows as the claim still wants:
   * every domain had its few in the first round. A walk
   * that found rows and ran out of budget mid-round leaves the side `unfinished`, so the scheduler claims again
   * soon; a walk that found nothing leaves it to the scheduler's usual pause (no spinning over idle domains).
   */
  private walkPastBacklog(side: Side, now: number, limit: number, excluded: ReadonlySet<string>, taken: Set<string>): ClaimRow[] {
    const out: ClaimRow[] = [];
    let after = side.cursor;
    let restarted = false;
    let served = 0;
    const seen = new Set<string>();
    for (let visited = 0; out.length < limit; visited++) {
      if (served >= DOMAINS_PER_CLAIM || visited >= VISITS_PER_CLAIM) {
        side.unfinished = out.length > 0 && !restarted;
        break;
      }
      const domain = side.nextDomain.get({ after })?.domain;
      if (domain === undefined) {
        // the end of a round: the next begins at the first domain
        after = "";
        if (restarted) break;
        restarted = true;
        continue;
      }
      after = domain;
      if (excluded.has(domain)) continue;
      // rows read earlier in this walk are not leased yet: ask for them again, with as many more, and drop them
      const from = seen.has(domain) ? out.filter((r) => r.domain === domain).length : 0;
      const want = from > 0 ? limit - out.length : Math.min(ROWS_PER_DOMAIN, limit - out.length);
      seen.add(domain);
      const rows = side.dueInDomain.all({ domain, now, limit: from + want }).filter((r) => !taken.has(r.id));
      if (rows.length > 0) served++;
      for (const r of rows) taken.add(r.id);
      out.push(...rows);
    }
    side.cursor = after;
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

  /**
   * Gives leases back without counting an attempt, each row due again when it was due before its claim: it keeps
   * its place, oldest first, in front of work that came due while it waited in memory (so work handed back
   * because it waited too long is not put behind newer mail, again and again).
   */
  putBack(rows: readonly Pick<ClaimedRecipient, "id" | "dueAt">[]): void {
    if (rows.length === 0) return;
    const now = this.now();
    this.sqlite.transaction(() => {
      for (const r of rows) this.releaseOne.run(r.dueAt, now, r.id);
    }).immediate();
  }

  /** Gives leases back without counting an attempt, all due at `at` (default now): a destination held back. */
  release(ids: RecipientId[], at?: number): void {
    if (ids.length === 0) return;
    const now = this.now();
    this.releaseAll.run(at ?? now, now, JSON.stringify(ids));
  }

  /**
   * Moves the lease of rows still pending to now + `leaseMs` (work the scheduler keeps in memory past its lease:
   * an attempt whose result is not recorded yet must not come due and go again).
   */
  extend(ids: RecipientId[], leaseMs: number): void {
    if (ids.length === 0) return;
    const now = this.now();
    this.sqlite.transaction(() => {
      for (const id of ids) this.extendOne.run(now + leaseMs, now, id);
    }).immediate();
  }

  /** When the next pending recipient is due (ms since epoch; may be in the past), or null if nothing is pending. */
  nextDueAt(): number | null {
    return this.nextDue.get()?.at ?? null;
  }

  loadMessage(id: MessageId): StoredMessage | null {
    // a message intake has just committed is handed over (queue/handoff.ts): its body is not read back
    const head = this.messageHead.get(id);
    const handed = head && recentBodies.take(id, head.size);
    if (handed) return { id, userId: head.user_id as UserId | null, envelopeFrom: head.envelope_from, createdAt: head.created_at, ...handed };
    const r = head && this.message.get(id);
    if (!r) return null;
    return {
      id: r.id as MessageId,
      userId: r.user_id as UserId | null,
      envelopeFrom: r.envelope_from,
      body: bodyOf(this.sqlite, r),
      createdAt: r.created_at,
      options: {
        inlineCss: !!r.inline_css,
        trackClicks: !!r.track_clicks,
        trackOpens: !!r.track_opens,
        trackBounces: !!r.track_bounces,
        unsubscribe: !!r.unsubscribe,
      },
      messageIdHeader: r.message_id_header,
    };
  }
}

interface Exclusion {
  set: ReadonlySet<string>;
  json: string;
}

const NONE: ReadonlySet<string> = new Set();

/** The domains a side's oldest-first reads leave out: its own exclusions and the metered domains. */
function exclusion(domains: ReadonlySet<string>, metered: ReadonlySet<string>): Exclusion | null {
  const set = metered.size === 0 ? domains : new Set([...domains, ...metered]);
  return set.size > 0 ? { set, json: JSON.stringify([...set]) } : null;
}

function isSideExclusions(e: ReadonlySet<string> | SideExclusions): e is SideExclusions {
  return "fresh" in e && "retry" in e;
}
