/**
 * @module delivery/window — the active window: which claimed recipients are in memory, and every way out of it —
 * settled (group commit, settle-batch.ts), handed back to the queue, or kept until the store records a delivery
 * (unrecorded.ts). At most its capacity is leased at once, however long the queue is.
 */
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient, StoredMessage } from "../queue/claim.ts";
import { groupBy, type Job } from "./job.ts";
import type { ClaimSource } from "./pump.ts";
import { SettleBatcher } from "./settle-batch.ts";
import type { InFlight } from "./shutdown.ts";
import type { AfterCommit, RecipientResult, RouteResult } from "./types.ts";
import { UnrecordedOutcomes } from "./unrecorded.ts";

export type RouteFailure = Exclude<RouteResult, { kind: "ok" }>;

/** Where results go (delivery/outcome.ts OutcomeRecorder): synchronous, inside the settle batch's transaction. */
export interface OutcomeSink {
  settle(message: StoredMessage, results: RecipientResult[]): AfterCommit;
  settleRouteFailure(message: StoredMessage, recipients: ClaimedRecipient[], route: RouteFailure): AfterCommit;
}

export interface WindowDeps {
  claimer: ClaimSource;
  outcomes: OutcomeSink;
  /** runs a function in one database transaction (settle-batch.ts); without it every settle commits alone */
  batch?: (fn: () => void) => void;
  life: InFlight;
  log: Logger;
  now: () => number;
  /** work a store error stopped goes back to the queue for this long */
  storeRetryMs: number;
  /** recipients left the window: there may be room to claim again */
  freed: () => void;
}

export class ActiveWindow {
  private active = new Set<RecipientId>();
  private readonly settles: SettleBatcher;
  /** delivered, but the settle did not commit: tried again until it does, never sent again */
  private readonly unrecorded: UnrecordedOutcomes;

  constructor(private readonly deps: WindowDeps) {
    this.settles = new SettleBatcher(deps.batch, deps.log);
    this.unrecorded = new UnrecordedOutcomes({
      record: async (u) => {
        const msg = this.deps.claimer.loadMessage(u.messageId);
        if (msg) await this.settles.run(() => this.deps.outcomes.settle(msg, u.results));
      },
      recorded: (u) => this.forget(u.recipients),
      log: deps.log,
      now: deps.now,
      maxRetryMs: deps.storeRetryMs,
    });
  }

  get size(): number {
    return this.active.size;
  }

  /** Takes a claim in; a recipient already here (a transaction outlived its lease) is left out. */
  admit(batch: readonly ClaimedRecipient[]): ClaimedRecipient[] {
    const fresh = batch.filter((r) => !this.active.has(r.id));
    for (const r of fresh) this.active.add(r.id);
    return fresh;
  }

  /**
   * The job's message, or null when it is gone (`queue delete`) or cannot be read now: then the job is done
   * with here, handed back for later (no attempt counted) when the store failed.
   */
  load(job: Job): StoredMessage | null {
    try {
      const msg = this.deps.claimer.loadMessage(job.messageId);
      if (!msg) this.forget(job.recipients);
      return msg;
    } catch (e) {
      this.deps.log.error("delivery_load_failed", { queue_id: job.messageId, recipients: job.recipients.length, error: e });
      this.handBack([job], this.deps.now() + this.deps.storeRetryMs);
      return null;
    }
  }

  /**
   * Records a transaction's results; outcomes log one line per recipient and attempt. A settle that does not
   * commit: when the receiver took the message for any recipient, the results wait in `unrecorded` (recipients
   * still active) until the store takes them; otherwise the lease runs out and the recipients are tried again
   * (at least once, never lost).
   */
  async settle(msg: StoredMessage, job: Job, results: RecipientResult[]): Promise<void> {
    try {
      await this.settles.run(() => this.deps.outcomes.settle(msg, results));
    } catch (e) {
      if (results.some((r) => r.outcome === "delivered")) {
        this.unrecorded.add({ messageId: msg.id, recipients: job.recipients, results }, e);
        return;
      }
      this.deps.log.error("delivery_settle_failed", { queue_id: msg.id, error: e });
    }
    this.forget(job.recipients);
  }

  /** Settles jobs that were never sent (a dead destination, a loop back to ourselves), one result per recipient. */
  settleUnsent(jobs: readonly Job[], result: (r: ClaimedRecipient) => RecipientResult): Promise<void> {
    const settles = jobs.map((job) => {
      const results = job.recipients.map(result);
      const settled = this.withMessage(job.messageId, job.recipients, (msg) => this.deps.outcomes.settle(msg, results));
      this.deps.life.track(settled);
      return settled;
    });
    return Promise.all(settles).then(() => {});
  }

  settleRouteFailure(recipients: readonly ClaimedRecipient[], route: RouteFailure): void {
    for (const [messageId, rs] of groupBy(recipients, (r) => r.messageId)) {
      this.deps.life.track(this.withMessage(messageId, rs, (msg) => this.deps.outcomes.settleRouteFailure(msg, rs, route)));
    }
  }

  /** Leases go back without counting an attempt: due again at `at`, or else when they were due before (their place). */
  handBack(jobs: readonly Job[], at?: number): void {
    const recipients = jobs.flatMap((j) => j.recipients);
    if (recipients.length === 0) return;
    try {
      if (at === undefined) this.deps.claimer.putBack(recipients);
      else this.deps.claimer.release(recipients.map((r) => r.id), at);
    } catch (e) {
      this.deps.log.error("delivery_release_failed", { error: e });
    }
    this.forget(recipients);
  }

  /**
   * Deliveries waiting to be recorded keep their leases (the sweep calls this). If this fails too (the store
   * refuses every write), the window still keeps a re-claim from sending them again.
   */
  extendUnrecorded(leaseMs: number): void {
    const ids = this.unrecorded.recipientIds();
    if (ids.length === 0) return;
    try {
      this.deps.claimer.extend(ids, leaseMs);
    } catch (e) {
      this.deps.log.warn("delivery_lease_extend_failed", { recipients: ids.length, error: e });
    }
  }

  /** Shutdown: deliveries not yet recorded get until the deadline, then are logged one by one; settles commit now. */
  async close(deadline: number): Promise<void> {
    await this.unrecorded.close(deadline);
    this.settles.flush();
  }

  /** Runs `fn` with the stored message; a message deleted meanwhile (`queue delete`) is simply dropped. */
  private async withMessage(messageId: MessageId, rs: readonly ClaimedRecipient[], fn: (m: StoredMessage) => AfterCommit): Promise<void> {
    try {
      const msg = this.deps.claimer.loadMessage(messageId);
      if (msg) await this.settles.run(() => fn(msg));
    } catch (e) {
      this.deps.log.error("delivery_settle_failed", { queue_id: messageId, error: e });
    } finally {
      this.forget(rs);
    }
  }

  private forget(rs: readonly ClaimedRecipient[]): void {
    for (const r of rs) this.active.delete(r.id);
    this.deps.freed();
  }
}
