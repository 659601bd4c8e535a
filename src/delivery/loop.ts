/**
 * @module delivery/loop — the scheduler (Postfix qmgr): wires claiming (pump.ts) into the active window
 * (window.ts), routes each claim (route-cache.ts), groups it into jobs per destination (destination.ts), and stops
 * it all within a deadline (shutdown.ts).
 *
 * Flow: claim (oldest next_attempt_at first) → route each domain (cached) → one job per message and destination
 * key → per destination, connection workers take jobs while the throttle gives slots; each job's transactions come
 * from personalize (what bytes each recipient gets, which of them share a transaction) → settle every result.
 * Obligations:
 * - At most `window` leased recipients live in memory, however big the queue is.
 * - A destination that must wait (back-off, dead, its next rate token far away) hands its recipients back, in one
 *   statement, for the time it can take mail again, and its domains are left out of claims until then: it never
 *   holds up mail for other destinations, and costs one check per claim, not a walk over its recipients.
 *   Deferred mail never slows new mail: each claim is split between first attempts and retries, each side oldest
 *   first (queue/claim.ts).
 *   New mail never starves retries either: at each destination retries and first attempts wait in two lanes
 *   served in turn (lanes.ts), and a lane full of one kind keeps only that kind out of claims.
 * - Leases expire on their own (kill -9 leaves rows claimable once `leaseMs` has passed, and a restart frees
 *   them at once: QueueClaimer.recoverLeases); recipients that
 *   wait in memory for longer than half a lease are handed back in their place and claimed again.
 * - A delivery whose settle does not commit (a full disk) is kept and committed later (unrecorded.ts), its
 *   recipients active and leased meanwhile: a failing store costs delay, never a second delivery.
 * - Mail at a destination held back because it is failing (dead, backing off) that has outlived
 *   `max_queue_time` is bounced as expired without another try, in batches, when the destination is held and
 *   every EXPIRE_EVERY_MS while it stays so: one index seek when nothing has expired (queue/expire.ts).
 * - stop(): stop claiming, hand back what has not started, let in-flight transactions finish within the
 *   shutdown window, then hand back whatever is still out.
 */
import type { DeliveryConfig } from "../config/schema.ts";
import type { MessageId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient, SideExclusions, StoredMessage } from "../queue/claim.ts";
import { DestinationQueue, type DestinationContext } from "./destination.ts";
import { localFailure, push, type Job } from "./job.ts";
import { ClaimPump, type ClaimSource } from "./pump.ts";
import { RouteCache } from "./route-cache.ts";
import { sandboxRouterIf, transportFor } from "./sandbox.ts";
import { InFlight } from "./shutdown.ts";
import { Throttle, type ThrottleOptions } from "./throttle.ts";
import type { Destination, OutboundMessage, Router, Transport } from "./types.ts";
import { ActiveWindow, type OutcomeSink } from "./window.ts";

export { signalOf } from "./destination.ts";
export type { ClaimSource } from "./pump.ts";
export type { OutcomeSink } from "./window.ts";

/** How often the expired mail of failing destinations is looked for while they stay held (besides when one is held). */
const EXPIRE_EVERY_MS = 30_000;
/** The most recipients one look bounces as expired; a full batch is followed by another once it has settled. */
const EXPIRE_BATCH = 500;

export interface LoopOptions {
  /** most recipients leased into memory at once */
  window?: number;
  /** how long a claim holds a recipient; after a crash it comes back this much later */
  leaseMs?: number;
  /** keep a connection with no work open this long for reuse */
  idleMs?: number;
  /** how long a route is trusted; failures are kept shorter */
  routeTtlMs?: number;
  /** a destination with this many jobs of a kind (first attempts, retries) waiting gets no more of that kind until it drains */
  backlogPerDestination?: number;
  /** in-flight transactions get this long on stop() before their recipients are handed back */
  shutdownMs?: number;
  /** work that a store error stopped goes back to the queue for this long, so a failing store is not hammered */
  storeRetryMs?: number;
  throttle?: Omit<ThrottleOptions, "concurrency">;
}

export interface LoopDeps {
  config: DeliveryConfig;
  claimer: ClaimSource;
  outcomes: OutcomeSink;
  router: Router;
  transport: Transport;
  log: Logger;
  now?: () => number;
  options?: LoopOptions;
  /**
   * Runs `fn` in one database transaction. Settles that finish in the same tick are made inside one such
   * transaction (each still in its own savepoint), so they share one commit (fsync) instead of paying one each:
   * group commit, as intake does. Without it every settle commits alone.
   */
  batch?: (fn: () => void) => void;
  /**
   * The transactions that carry a message to its recipients at one destination (delivery/personalize.ts). It may
   * reject: the recipients are then deferred. Default: one transaction, the stored envelope and bytes.
   */
  personalize?: (message: StoredMessage, recipients: readonly ClaimedRecipient[]) => Promise<OutboundMessage[]>;
}

export class DeliveryLoop {
  readonly name = "delivery";
  readonly throttle: Throttle;
  private readonly o: Required<Omit<LoopOptions, "throttle">>;
  private readonly now: () => number;
  private readonly life: InFlight;
  private readonly window: ActiveWindow;
  private readonly pump: ClaimPump;
  private readonly routes: RouteCache;
  private dests = new Map<string, DestinationQueue>();
  /** destinations that found the global cap full; any released slot pumps them */
  private waitingGlobal = new Set<DestinationQueue>();
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  /** the last look for expired mail at failing destinations (this loop's clock); whether one runs, or is asked for */
  private expiry = { at: -Infinity, running: false, again: false };
  private readonly context: DestinationContext;

  constructor(private deps: LoopDeps) {
    this.now = deps.now ?? Date.now;
    const o = deps.options ?? {};
    this.o = {
      window: o.window ?? 2_000,
      leaseMs: o.leaseMs ?? 20_000,
      idleMs: o.idleMs ?? 5_000,
      routeTtlMs: o.routeTtlMs ?? 60_000,
      backlogPerDestination: o.backlogPerDestination ?? 500,
      shutdownMs: o.shutdownMs ?? 25_000,
      storeRetryMs: o.storeRetryMs ?? 5_000,
    };
    this.throttle = new Throttle({ concurrency: deps.config.concurrency, ...o.throttle }, this.now);
    this.life = new InFlight(this.now);
    this.routes = new RouteCache(sandboxRouterIf(deps.config.sandbox, deps.router), this.o.routeTtlMs, this.now);
    this.window = new ActiveWindow({
      claimer: deps.claimer, outcomes: deps.outcomes, batch: deps.batch, life: this.life, log: deps.log, now: this.now,
      storeRetryMs: this.o.storeRetryMs,
      // claim again once a good batch fits (one claim per settled message would cost a commit each)
      freed: () => {
        if (this.pump.windowFull && this.window.size <= this.o.window * 0.75) this.pump.wake();
      },
    });
    this.pump = new ClaimPump({
      claimer: deps.claimer, capacity: this.o.window, inMemory: () => this.window.size, leaseMs: this.o.leaseMs,
      exclusions: () => this.excludedDomains(),
      dispatch: (batch) => this.life.track(this.dispatch(batch).catch((e) => deps.log.error("delivery_dispatch_failed", { error: e }))),
      log: deps.log, now: this.now,
    });
    this.context = this.destinationContext();
  }

  start(): this {
    this.pump.start();
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(1_000, this.o.leaseMs / 4));
    return this;
  }

  /**
   * A reload (SIGHUP): settings, routes and the transport for work routed from now on. Routes are looked up
   * anew; jobs already waiting at a destination keep it, and a destination held back (dead, backing off) no
   * longer keeps its domains out of claims, since they may be routed elsewhere now.
   */
  reconfigure(config: DeliveryConfig, router: Router, transport: Transport): void {
    this.deps = { ...this.deps, config, router, transport };
    this.routes.replace(sandboxRouterIf(config.sandbox, router));
    this.throttle.setConcurrency(config.concurrency);
    for (const dq of this.dests.values()) dq.reconfigure(config);
    this.wake();
  }

  /** New mail was committed, or room freed up: claim now instead of at the next due time. */
  wake(): void {
    this.pump.wake();
  }

  /**
   * `deadline` (ms, this loop's clock): when in-flight transactions must be done, shared with the rest of the
   * process's shutdown; by default `shutdownMs` from now.
   */
  async stop(deadline = this.now() + this.o.shutdownMs): Promise<void> {
    if (this.life.stopping) return;
    this.life.beginStop();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.pump.stop();
    // claims already routing, and settles without a connection (route failures, dead destinations), finish first
    await this.life.tasksDone(deadline);
    for (const dq of this.dests.values()) this.window.handBack(dq.close());
    const givenUp = await this.life.drain(deadline);
    if (givenUp.length > 0) {
      this.deps.log.warn("delivery_shutdown_timeout", { in_flight: givenUp.length });
      this.window.handBack(givenUp);
    }
    // what was delivered but not recorded gets the rest of the time; then it is logged, one line per recipient
    await this.window.close(deadline);
  }

  private destinationContext(): DestinationContext {
    const personalize = this.deps.personalize;
    return {
      throttle: this.throttle, life: this.life, window: this.window, log: this.deps.log, idleMs: this.o.idleMs,
      now: this.now,
      config: () => this.deps.config,
      transport: (dest) => transportFor(dest, this.deps.transport),
      personalize: personalize
        ? (msg, rs) => personalize(msg, rs)
        : async (msg, rs) => [{ messageId: msg.id, envelopeFrom: msg.envelopeFrom, recipients: rs.map((r) => ({ id: r.id, address: r.address })), body: msg.body }],
      failing: () => this.expireHeld(),
      released: (dq) => {
        for (const waiting of [...this.waitingGlobal]) {
          this.waitingGlobal.delete(waiting);
          waiting.pump();
        }
        this.gc(dq);
      },
      freeSlot: (except) => {
        this.waitingGlobal.add(except);
        for (const dq of this.dests.values()) if (dq !== except && dq.closeIdle()) return;
      },
    };
  }

  /**
   * Domains whose destination is held back, per side; and those whose lane of that kind is full: new mail filling
   * a slow destination's memory must not keep its due retries out of the claims (nor the other way round). A
   * destination holding a quarter of the window in waiting recipients gets nothing more either: a throttled one
   * (a rate of one a minute, say) would otherwise fill the window with mail it cannot take, and leave no room to
   * claim mail for the destinations that can. One whose rate gives a message less often than it is worth holding
   * a connection for is metered: a claim takes only a few of its rows, and nothing while a job waits there (it
   * sends that one, then is held until its next token).
   */
  private excludedDomains(): SideExclusions {
    const out = { fresh: new Set<string>(), retry: new Set<string>(), metered: new Set<string>() };
    const now = this.now();
    const share = this.o.window / 4;
    for (const dq of this.dests.values()) {
      const held = dq.heldUntil > now || dq.sated || dq.jobs.recipients() >= share;
      if (!held && dq.metered) for (const d of dq.domains) out.metered.add(d);
      for (const kind of ["fresh", "retry"] as const) {
        if (held || dq.jobs.waiting(kind) >= this.o.backlogPerDestination) for (const d of dq.domains) out[kind].add(d);
      }
    }
    return out;
  }

  /** Routes a claim's domains, then queues one job per message at each destination. */
  private async dispatch(batch: ClaimedRecipient[]): Promise<void> {
    const fresh = this.window.admit(batch);
    const byDomain = new Map<string, ClaimedRecipient[]>();
    for (const r of fresh) push(byDomain, r.domain, r);
    const routed = await Promise.all([...byDomain].map(async ([domain, rs]) => [domain, rs, await this.routes.route(domain)] as const));
    const jobs = new Map<DestinationQueue, Map<MessageId, ClaimedRecipient[]>>();
    for (const [domain, rs, result] of routed) {
      if (result.kind !== "ok") {
        this.window.settleRouteFailure(rs, result);
        continue;
      }
      const dq = this.destination(result.destination, domain);
      let byMessage = jobs.get(dq);
      if (!byMessage) jobs.set(dq, (byMessage = new Map()));
      for (const r of rs) push(byMessage, r.messageId, r);
    }
    const now = this.now();
    for (const [dq, byMessage] of jobs) {
      for (const [messageId, recipients] of byMessage) {
        dq.jobs.push({ messageId, recipients, claimedAt: now, retry: recipients.some((r) => r.attempts > 0) });
      }
      dq.pump();
    }
  }

  private destination(dest: Destination, domain: string): DestinationQueue {
    let dq = this.dests.get(dest.key);
    if (!dq) this.dests.set(dest.key, (dq = new DestinationQueue(this.context, dest)));
    dq.addDomain(domain);
    return dq;
  }

  /**
   * Jobs that waited in memory for half a lease go back to the queue in their place (due when they were due), to
   * come back with a fresh lease, ahead of work that came due meanwhile; results waiting to be recorded keep their
   * leases.
   */
  private sweep(): void {
    if (this.now() - this.expiry.at >= EXPIRE_EVERY_MS) this.expireHeld();
    this.window.extendUnrecorded(this.o.leaseMs);
    const old = this.now() - this.o.leaseMs / 2;
    for (const dq of [...this.dests.values()]) {
      this.gc(dq);
      this.window.handBack(dq.jobs.takeClaimedBefore(old));
    }
  }

  /** Starts a look for expired mail at failing destinations, or asks the one running to look once more. */
  private expireHeld(): void {
    if (this.life.stopping) return;
    if (this.expiry.running) {
      this.expiry.again = true;
      return;
    }
    this.expiry.running = true;
    this.life.track(this.expireRounds().catch((e) => this.deps.log.error("delivery_expire_failed", { error: e })).finally(() => {
      this.expiry.running = false;
    }));
  }

  private async expireRounds(): Promise<void> {
    const claimExpired = this.deps.claimer.claimExpired?.bind(this.deps.claimer);
    if (!claimExpired) return;
    for (let more = true; more && !this.life.stopping; ) {
      this.expiry.again = false;
      this.expiry.at = this.now();
      const byDomain = new Map<string, DestinationQueue>();
      for (const dq of this.dests.values()) if (dq.heldFailing) for (const d of dq.domains) byDomain.set(d, dq);
      if (byDomain.size === 0) return;
      const createdBefore = this.expiry.at - this.deps.config.max_queue_time + 1;
      const batch = claimExpired([...byDomain.keys()], createdBefore, EXPIRE_BATCH, this.o.leaseMs);
      more = batch.more || this.expiry.again;
      await this.bounceExpired(this.window.admit(batch.recipients), byDomain);
    }
  }

  /**
   * Settles leased expired recipients as deferred with their destination's last error: the outcome recorder finds
   * them past max_queue_time and bounces them (4.4.7, the `expired` count, a DSN per message), as with any deferral.
   */
  private async bounceExpired(recipients: ClaimedRecipient[], byDomain: Map<string, DestinationQueue>): Promise<void> {
    if (recipients.length === 0) return;
    const jobs = new Map<DestinationQueue, Map<MessageId, ClaimedRecipient[]>>();
    for (const r of recipients) {
      const dq = byDomain.get(r.domain)!;
      let byMessage = jobs.get(dq);
      if (!byMessage) jobs.set(dq, (byMessage = new Map()));
      push(byMessage, r.messageId, r);
    }
    await Promise.all([...jobs].map(async ([dq, byMessage]) => {
      const reason = this.throttle.lastFailure(dq.key) ?? (dq.heldFor === "dead" ? "destination not answering" : "destination asked to slow down");
      const list: Job[] = [...byMessage].map(([messageId, rs]) => ({ messageId, recipients: rs, claimedAt: this.now(), retry: true }));
      await this.window.settleUnsent(list, (r) => localFailure(r.id, reason));
      // after the settles (each logs its own failure): a summary per destination and look
      this.deps.log.info("delivery_expired_destination", { destination: dq.key, messages: list.length, recipients: list.reduce((n, j) => n + j.recipients.length, 0), reason });
    }));
  }

  private gc(dq: DestinationQueue): void {
    if (dq.unused && this.dests.get(dq.key) === dq) this.dests.delete(dq.key);
  }
}
