/**
 * @module queue/expire — finds the pending recipients of messages older than a cutoff at given domains (those of
 * destinations held back because they are failing) and leases them, so the scheduler can bounce them as expired
 * without another connection (Postfix maximal_queue_lifetime: a temporary failure past the queue lifetime is
 * final).
 *
 * Message ids are time-ordered (mail/ids.ts), so the messages older than the cutoff are one range of the partial
 * index `recipients_pending_message` (pending rows only): when nothing has expired the range is empty and a look
 * costs one index seek, however long the queue. Rows leased by a claim are left alone; their attempt settles them.
 */
import type { Database, Statement } from "bun:sqlite";
import { messageIdsFrom } from "../mail/ids.ts";
import { claimedFrom, type ClaimRow } from "./claim-row.ts";
import type { ClaimedRecipient } from "./claim.ts";

/** One look: the leased recipients, and whether more may be waiting (the batch was full). */
export interface ExpiredBatch {
  recipients: ClaimedRecipient[];
  more: boolean;
}

type Params = { before: string; domains: string; now: number; limit: number };

export class ExpiredRecipients {
  private find: Statement<ClaimRow, [Params]>;
  private lease: Statement;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
  ) {
    this.find = sqlite.query(
      `SELECT id, message_id, address, domain, attempts, next_attempt_at FROM recipients INDEXED BY recipients_pending_message
       WHERE status IN ('queued','deferred') AND message_id < $before
         AND domain IN (SELECT value FROM json_each($domains))
         AND (lease_until IS NULL OR lease_until <= $now)
       ORDER BY message_id LIMIT $limit`,
    );
    this.lease = sqlite.query("UPDATE recipients SET lease_until = ?1, next_attempt_at = ?1, updated_at = ?2 WHERE id = ?3");
  }

  /**
   * Leases, until now + `leaseMs`, up to `limit` pending recipients at `domains` of messages made before
   * `createdBefore`, oldest message first. A full batch ends at a message boundary (unless one message fills it),
   * so each message's recipients are settled together and its sender gets one notice for them.
   */
  claim(domains: readonly string[], createdBefore: number, limit: number, leaseMs: number): ExpiredBatch {
    if (domains.length === 0 || limit <= 0) return { recipients: [], more: false };
    const run = this.sqlite.transaction((): ExpiredBatch => {
      const now = this.now();
      let rows = this.find.all({ before: messageIdsFrom(createdBefore), domains: JSON.stringify(domains), now, limit });
      const more = rows.length === limit;
      if (more) {
        const last = rows[rows.length - 1]!.message_id;
        const whole = rows.filter((r) => r.message_id !== last);
        if (whole.length > 0) rows = whole;
      }
      for (const r of rows) this.lease.run(now + leaseMs, now, r.id);
      return { recipients: rows.map(claimedFrom), more };
    });
    return run.immediate();
  }
}
