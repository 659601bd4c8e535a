/**
 * @module delivery/unrecorded — attempts the receiver accepted whose settle did not commit (a full disk, a store
 * that fails writes): kept in memory and recorded again with backoff until the store takes them. A failing store
 * then costs delay, never a second delivery: the recipients stay in the scheduler's active window (so a claim of
 * a row whose lease ran out skips them), and the scheduler keeps their leases alive.
 *
 * Memory is bounded by that window: recipients waiting here count in it, so the scheduler claims less the more
 * of them there are. All of them are tried together in one round, which the settle batch turns into one commit.
 */
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient } from "../queue/claim.ts";
import type { RecipientResult } from "./types.ts";

/** One attempt's results, not yet in the store. */
export interface Unrecorded {
  messageId: MessageId;
  recipients: readonly ClaimedRecipient[];
  results: RecipientResult[];
}

export interface UnrecordedDeps {
  /** records the results (load the message, settle, commit); rejects when the store did not take them */
  record(u: Unrecorded): Promise<void>;
  /** the results are in the store now (or their message is gone): the recipients are done with */
  recorded(u: Unrecorded): void;
  log: Logger;
  now: () => number;
  /** the longest wait between two rounds (the backoff starts at FIRST_RETRY_MS and doubles up to it) */
  maxRetryMs: number;
}

const FIRST_RETRY_MS = 100;

export class UnrecordedOutcomes {
  private waiting = new Set<Unrecorded>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private round: Promise<void> | null = null;
  /** rounds in a row that left something unrecorded */
  private failures = 0;
  private closed = false;

  constructor(private deps: UnrecordedDeps) {}

  get size(): number {
    return this.waiting.size;
  }

  /** Recipients whose results are waiting here: their leases must not run out. */
  recipientIds(): RecipientId[] {
    return [...this.waiting].flatMap((u) => u.recipients.map((r) => r.id));
  }

  /** Keeps `u`, whose settle just failed with `error`, and schedules the next round. */
  add(u: Unrecorded, error: unknown): void {
    this.waiting.add(u);
    this.deps.log.error("delivery_unrecorded", {
      queue_id: u.messageId,
      recipients: u.results.filter((r) => r.outcome === "delivered").length,
      error,
      detail: "delivered but not recorded yet: the commit is tried again, the message is not sent again",
    });
    this.schedule();
  }

  /**
   * For shutdown: rounds until everything is recorded or `deadline` (this clock) has passed; then each delivered
   * recipient still unrecorded is logged as an error, and nothing is tried any more. Their leases are left as they
   * are (handing them back would send the message again at once).
   */
  async close(deadline: number): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.round;
    while (this.waiting.size > 0 && this.deps.now() < deadline) {
      await this.runRound();
      if (this.waiting.size > 0) await Bun.sleep(Math.max(0, Math.min(this.backoffMs(), deadline - this.deps.now())));
    }
    for (const u of this.waiting) this.logLost(u);
    this.waiting.clear();
  }

  private backoffMs(): number {
    return Math.min(this.deps.maxRetryMs, FIRST_RETRY_MS * 2 ** Math.min(this.failures, 20));
  }

  private schedule(): void {
    if (this.closed || this.timer || this.round || this.waiting.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.runRound().then(() => this.schedule());
    }, this.backoffMs());
  }

  /** Tries everything waiting once; one log line for what is still not recorded. */
  private runRound(): Promise<void> {
    this.round ??= (async () => {
      const batch = [...this.waiting];
      const outcomes = await Promise.allSettled(batch.map((u) => this.deps.record(u)));
      let lastError: unknown;
      outcomes.forEach((o, i) => {
        if (o.status === "rejected") {
          lastError = o.reason;
          return;
        }
        this.waiting.delete(batch[i]!);
        this.deps.recorded(batch[i]!);
      });
      this.failures = lastError === undefined ? 0 : this.failures + 1;
      if (lastError !== undefined) {
        this.deps.log.warn("delivery_unrecorded_retry_failed", { outcomes: this.waiting.size, rounds: this.failures, error: lastError });
      }
    })().finally(() => (this.round = null));
    return this.round;
  }

  private logLost(u: Unrecorded): void {
    const byId = new Map(u.recipients.map((r) => [r.id, r]));
    for (const r of u.results) {
      if (r.outcome !== "delivered") continue;
      this.deps.log.error("delivery_not_recorded", {
        queue_id: u.messageId,
        recipient_id: r.recipientId,
        recipient: byId.get(r.recipientId)?.address,
        mx: r.mx ?? null,
        reply: r.reply,
        detail: "delivered but not recorded: the store refused the commit until shutdown; the next start sends it again",
      });
    }
  }
}
