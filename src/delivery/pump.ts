/**
 * @module delivery/pump — claiming: leases due recipients from the queue into the active window whenever there
 * is room, sleeping until the next row is due or a wake-up (new mail committed, room freed), and spacing claims so
 * that each one (a commit) carries several messages.
 */
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient, SideExclusions, StoredMessage } from "../queue/claim.ts";
import type { ExpiredBatch } from "../queue/expire.ts";

/** The queue as the scheduler uses it (queue/claim.ts QueueClaimer). */
export interface ClaimSource {
  claim(limit: number, leaseMs: number, exclude?: ReadonlySet<string> | SideExclusions): ClaimedRecipient[];
  /** the last claim's walk past an excluded backlog ran out of budget: due mail may wait behind it */
  readonly walkUnfinished?: boolean;
  release(ids: RecipientId[], at?: number): void;
  /** gives leases back, each row due again when it was due before its claim (it keeps its place) */
  putBack(rows: readonly ClaimedRecipient[]): void;
  /** moves the leases of rows still pending to now + leaseMs */
  extend(ids: RecipientId[], leaseMs: number): void;
  nextDueAt(): number | null;
  loadMessage(id: MessageId): StoredMessage | null;
  /**
   * Leases pending recipients at `domains` of messages made before `createdBefore` (queue/expire.ts); without it
   * mail at a failing destination expires only when an attempt is recorded on it.
   */
  claimExpired?(domains: readonly string[], createdBefore: number, limit: number, leaseMs: number): ExpiredBatch;
}

export interface PumpDeps {
  claimer: ClaimSource;
  /** most recipients in memory at once, and how many are there now */
  capacity: number;
  inMemory: () => number;
  leaseMs: number;
  /** domains left out of the next claim, per side (destinations held back or with a full lane) */
  exclusions: () => SideExclusions;
  /** takes a claim's recipients (routing them is its own, tracked, work) */
  dispatch: (batch: ClaimedRecipient[]) => void;
  log: Logger;
  now: () => number;
}

/** The most recipients one claim takes. */
const CLAIM_MAX = 500;
/**
 * Every claim is a commit, an fsync that blocks the one thread intake shares: under a stream of mail, claims are
 * at least CLAIM_GAP_MS apart (new mail waits at most that much longer).
 */
const CLAIM_GAP_MS = 50;
/** How often the pump looks again while the rows due now all belong to excluded destinations. */
const EXCLUDED_LOOK_MS = 250;
/** The longest the pump sleeps with nothing in flight (it re-reads when the next row is due). */
const IDLE_LOOK_MS = 5_000;

export class ClaimPump {
  /** the last claim wanted more room than the window had: freed room should wake the pump */
  windowFull = false;
  private stopping = false;
  private running: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  private wakePending = false;

  constructor(private readonly deps: PumpDeps) {}

  start(): void {
    this.running ??= this.run();
  }

  /** Claim now instead of at the next due time. */
  wake(): void {
    const w = this.wakeUp;
    this.wakeUp = null;
    if (w) w();
    else this.wakePending = true; // the pump is busy claiming: it must look again before sleeping
  }

  /** Claims no more; resolves when the claim under way (if any) is done. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.running;
  }

  private async run(): Promise<void> {
    const { capacity } = this.deps;
    let lastClaim = 0;
    while (!this.stopping) {
      const room = capacity - this.deps.inMemory();
      this.windowFull = room < Math.min(CLAIM_MAX, capacity / 4);
      if (room > 0) {
        // at most a quarter of the window per claim: the scheduler learns which destinations are full or held back
        // from what it claimed, so one claim must not fill the window with mail for a destination that cannot take it
        const limit = Math.min(room, CLAIM_MAX, Math.max(1, Math.floor(capacity / 4)));
        try {
          const batch = this.deps.claimer.claim(limit, this.deps.leaseMs, this.deps.exclusions());
          if (batch.length > 0) this.deps.dispatch(batch);
          if (batch.length === limit) {
            // let the claim's routing (cached: a few microtasks) place its jobs, so the next claim's exclusions know them
            await new Promise<void>((resolve) => setImmediate(resolve));
            continue;
          }
        } catch (e) {
          this.deps.log.error("delivery_claim_failed", { error: e });
        }
      }
      await this.sleep(this.sleepMs(room > 0));
      // every claim is a commit (an fsync): under a stream of new mail, let a few messages gather per claim
      const since = this.deps.now() - lastClaim;
      if (since < CLAIM_GAP_MS && !this.stopping) await Bun.sleep(CLAIM_GAP_MS - since);
      lastClaim = this.deps.now();
    }
  }

  /** Until the next due row, bounded; a wake() cuts it short. */
  private sleepMs(hasRoom: boolean): number {
    if (!hasRoom) return 1_000;
    if (this.deps.claimer.walkUnfinished) return 10;
    let next: number | null = null;
    try {
      next = this.deps.claimer.nextDueAt();
    } catch {
      // the next turn logs a failing store
    }
    // while work is out, its settles and hand-backs move due times earlier than this sleep knew: look every second
    // idle: `outpost queue retry/flush` (another process) makes rows due without waking us, so look every 5 s
    const cap = this.deps.inMemory() > 0 ? 1_000 : IDLE_LOOK_MS;
    if (next === null) return cap;
    const ms = next - this.deps.now();
    // rows due now that the claim left belong to excluded (busy or held) destinations: look again soon, not at
    // once. A claim skips them by domain (queue/claim.ts), so looking costs a few index seeks, and a retry for a
    // healthy destination that comes due behind them waits at most this long
    if (ms <= 0) return EXCLUDED_LOOK_MS;
    return Math.min(cap, Math.max(10, ms));
  }

  private sleep(ms: number): Promise<void> {
    if (this.wakePending) {
      this.wakePending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
