/**
 * @module delivery/loop — the scheduler (Postfix qmgr): leases due recipients into a bounded active window,
 * groups them by destination, and runs SMTP transactions within each destination's throttle budget.
 *
 * Flow: claim (oldest next_attempt_at first) → route each domain (cached) → one job per message and destination
 * key → per destination, connection workers take jobs while the throttle gives slots → settle every result.
 * Obligations:
 * - At most `window` leased recipients live in memory, however big the queue is.
 * - A destination that must wait (back-off, dead) hands its recipients back with a later time and its domains
 *   are left out of claims, so it never holds up mail for other destinations. Deferred mail never slows new
 *   mail: each claim is split between first attempts and retries, each side oldest first (queue/claim.ts).
 *   New mail never starves retries either: at each destination retries and first attempts wait in two lanes
 *   served in turn (lanes.ts), and a lane full of one kind keeps only that kind out of claims.
 * - Leases expire on their own (kill -9 leaves rows claimable once `leaseMs` has passed, and a restart frees
 *   them at once: QueueClaimer.recoverLeases); recipients that
 *   wait in memory for longer than half a lease are handed back in their place and claimed again.
 * - A delivery whose settle does not commit (a full disk) is kept and committed later (unrecorded.ts), its
 *   recipients active and leased meanwhile: a failing store costs delay, never a second delivery.
 * - stop(): stop claiming, hand back what has not started, let in-flight transactions finish within the
 *   shutdown window, then hand back whatever is still out.
 */
import type { DeliveryConfig } from "../config/schema.ts";
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient, SideExclusions, StoredMessage } from "../queue/claim.ts";
import { classifyReply, enhancedFor } from "./classify.ts";
import { JobLanes } from "./lanes.ts";
import { SettleBatcher } from "./settle-batch.ts";
import { UnrecordedOutcomes } from "./unrecorded.ts";
import { isWait, limitsFor, Throttle, type DestinationLimits, type Lease, type Signal, type ThrottleOptions, type Wait } from "./throttle.ts";
import {
  ConnectFailure, LoopsBackToMyself, type AfterCommit, type Connection, type Destination, type OutboundMessage, type RecipientResult,
  type RouteResult, type Router, type Transport,
} from "./types.ts";

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
}

type RouteFailure = Exclude<RouteResult, { kind: "ok" }>;

/** Where results go (delivery/outcome.ts OutcomeRecorder): synchronous, inside the settle batch's transaction. */
export interface OutcomeSink {
  settle(message: StoredMessage, results: RecipientResult[]): AfterCommit;
  settleRouteFailure(message: StoredMessage, recipients: ClaimedRecipient[], route: RouteFailure): AfterCommit;
}

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
   * The transactions to make for one message's recipients at one destination (delivery/personalize.ts).
   * Default: one transaction, the stored envelope and bytes.
   */
  personalize?: (message: StoredMessage, recipients: readonly ClaimedRecipient[]) => OutboundMessage[];
}

interface Job {
  messageId: MessageId;
  recipients: ClaimedRecipient[];
  claimedAt: number;
  /** some recipient was tried before: it waits in the retry lane */
  retry: boolean;
  /** sent once already on a kept connection that turned out dead */
  retried?: boolean;
}

/** One receiving server set (Destination.key) and the work waiting for it. */
interface DestQueue {
  key: string;
  dest: Destination;
  domains: Set<string>;
  limits: DestinationLimits;
  /** retries and first attempts, served in turn (lanes.ts) */
  jobs: JobLanes<Job>;
  /** workers connecting: each will take a job soon */
  connecting: number;
  workers: number;
  /** connected workers waiting for a job */
  idle: Array<(job: Job | null) => void>;
  /** no connections before this time (throttle back-off or dead); jobs were handed back */
  heldUntil: number;
  timer: ReturnType<typeof setTimeout> | null;
}

const SANDBOX_REPLY = "sandbox";
/**
 * Every claim and every settle batch is a commit, an fsync that blocks the one thread intake shares: under a
 * stream of mail, claims are at least CLAIM_GAP_MS apart (new mail waits at most that much longer), and settles
 * share commits (settle-batch.ts). Connections don't wait for settles.
 */
const CLAIM_GAP_MS = 50;
/** The longest the scheduler sleeps with nothing in flight (it re-reads when the next row is due). */
const IDLE_LOOK_MS = 5_000;

export class DeliveryLoop {
  readonly name = "delivery";
  readonly throttle: Throttle;
  private readonly o: Required<Omit<LoopOptions, "throttle">>;
  private readonly now: () => number;
  private dests = new Map<string, DestQueue>();
  private routes = new Map<string, { until: number; result: Promise<RouteResult> }>();
  /** every recipient leased into memory, for the window and to ignore a re-claim of one already here */
  private active = new Set<RecipientId>();
  private inFlight = new Map<Job, Connection | null>();
  private stopping = false;
  private wakeUp: (() => void) | null = null;
  private wakePending = false;
  private running: Promise<void> | null = null;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  private drained: (() => void) | null = null;
  private pauses = new Set<() => void>();
  /** destinations that found the global cap full; any released slot pumps them */
  private waitingGlobal = new Set<DestQueue>();
  /** the last claim wanted more room than the window had */
  private windowFull = false;
  private readonly settles: SettleBatcher;
  /** delivered, but the settle did not commit: tried again until it does, never sent again */
  private readonly unrecorded: UnrecordedOutcomes;
  private tasks = new Set<Promise<unknown>>();

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
    this.settles = new SettleBatcher(deps.batch, deps.log);
    this.unrecorded = new UnrecordedOutcomes({
      record: async (u) => {
        const msg = this.deps.claimer.loadMessage(u.messageId);
        if (msg) await this.settles.run(() => this.deps.outcomes.settle(msg, u.results));
      },
      recorded: (u) => this.forget(u.recipients),
      log: deps.log,
      now: this.now,
      maxRetryMs: this.o.storeRetryMs,
    });
  }

  start(): this {
    this.running ??= this.run();
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
    this.routes.clear();
    this.throttle.setConcurrency(config.concurrency);
    for (const dq of this.dests.values()) {
      if (dq.jobs.length === 0) dq.domains.clear();
      dq.limits = limitsFor(config, dq.dest.hosts.map((h) => h.host), dq.domains);
    }
    this.wake();
  }

  /** New mail was committed, or room freed up: claim now instead of at the next due time. */
  wake(): void {
    const w = this.wakeUp;
    this.wakeUp = null;
    if (w) w();
    else this.wakePending = true; // the loop is busy claiming: it must look again before sleeping
  }

  /**
   * `deadline` (ms, this loop's clock): when in-flight transactions must be done, shared with the rest of the
   * process's shutdown; by default `shutdownMs` from now.
   */
  async stop(deadline = this.now() + this.o.shutdownMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.wake();
    for (const p of [...this.pauses]) p();
    await this.running;
    // claims already routing, and settles without a connection (route failures, sandbox), finish first
    await this.until(Promise.allSettled([...this.tasks]), deadline);
    for (const dq of this.dests.values()) {
      if (dq.timer) clearTimeout(dq.timer);
      this.handBack(dq.jobs.takeAll());
      for (const idle of dq.idle.splice(0)) idle(null);
    }
    if (this.inFlight.size > 0) await this.until(new Promise<void>((r) => (this.drained = r)), deadline);
    if (this.inFlight.size > 0) {
      this.deps.log.warn("delivery_shutdown_timeout", { in_flight: this.inFlight.size });
      const jobs = [...this.inFlight.keys()];
      for (const conn of this.inFlight.values()) void conn?.close();
      this.inFlight.clear();
      this.handBack(jobs);
    }
    // what was delivered but not recorded gets the rest of the time; then it is logged, one line per recipient
    await this.unrecorded.close(deadline);
    this.settles.flush();
  }

  /** `p`, or the deadline, whichever comes first. */
  private async until(p: Promise<unknown>, deadline: number): Promise<void> {
    let t: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((r) => (t = setTimeout(r, Math.max(0, deadline - this.now()))));
    await Promise.race([p, timeout]);
    clearTimeout(t);
  }

  /** Keeps `p` in view of stop(). */
  private track(p: Promise<unknown>): void {
    this.tasks.add(p);
    void p.finally(() => this.tasks.delete(p));
  }

  // ---- claiming ----------------------------------------------------------------------------------------

  private async run(): Promise<void> {
    let lastClaim = 0;
    while (!this.stopping) {
      const room = this.o.window - this.active.size;
      this.windowFull = room < Math.min(500, this.o.window / 4);
      if (room > 0) {
        const limit = Math.min(room, 500);
        try {
          const batch = this.deps.claimer.claim(limit, this.o.leaseMs, this.excludedDomains());
          const claimed = batch.length;
          if (claimed > 0) this.track(this.dispatch(batch).catch((e) => this.deps.log.error("delivery_dispatch_failed", { error: e })));
          if (claimed === limit) continue;
        } catch (e) {
          this.deps.log.error("delivery_claim_failed", { error: e });
        }
      }
      await this.sleep(this.sleepMs(room > 0));
      // every claim is a commit (an fsync): under a stream of new mail, let a few messages gather per claim
      const since = this.now() - lastClaim;
      if (since < CLAIM_GAP_MS && !this.stopping) await Bun.sleep(CLAIM_GAP_MS - since);
      lastClaim = this.now();
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
      // the next loop turn logs a failing store
    }
    // while work is out, its settles and hand-backs move due times earlier than this sleep knew: look every second
    // idle: `outpost queue retry/flush` (another process) makes rows due without waking us, so look every 5 s
    const cap = this.active.size > 0 ? 1_000 : IDLE_LOOK_MS;
    if (next === null) return cap;
    const ms = next - this.now();
    // rows due now that the claim left belong to excluded (busy or held) destinations: look again soon, not at once
    if (ms <= 0) return 1_000;
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

  /**
   * Domains whose destination is held back, per side; and those whose lane of that kind is full: new mail filling
   * a slow destination's memory must not keep its due retries out of the claims (nor the other way round).
   */
  private excludedDomains(): SideExclusions {
    const out = { fresh: new Set<string>(), retry: new Set<string>() };
    const now = this.now();
    for (const dq of this.dests.values()) {
      const held = dq.heldUntil > now;
      for (const kind of ["fresh", "retry"] as const) {
        if (held || dq.jobs.waiting(kind) >= this.o.backlogPerDestination) for (const d of dq.domains) out[kind].add(d);
      }
    }
    return out;
  }

  // ---- routing and grouping ------------------------------------------------------------------------------

  private async dispatch(batch: ClaimedRecipient[]): Promise<void> {
    const fresh = batch.filter((r) => !this.active.has(r.id));
    for (const r of fresh) this.active.add(r.id);
    if (this.deps.config.sandbox) return this.sandbox(fresh);
    const byDomain = groupBy(fresh, (r) => r.domain);
    const routed = await Promise.all([...byDomain].map(async ([domain, rs]) => [domain, rs, await this.route(domain)] as const));
    const jobs = new Map<string, { dq: DestQueue; byMessage: Map<MessageId, ClaimedRecipient[]> }>();
    for (const [domain, rs, result] of routed) {
      if (result.kind !== "ok") {
        this.routeFailed(rs, result);
        continue;
      }
      const dq = this.destQueue(result.destination, domain);
      let g = jobs.get(dq.key);
      if (!g) jobs.set(dq.key, (g = { dq, byMessage: new Map() }));
      for (const r of rs) push(g.byMessage, r.messageId, r);
    }
    const now = this.now();
    for (const { dq, byMessage } of jobs.values()) {
      for (const [messageId, recipients] of byMessage) {
        dq.jobs.push({ messageId, recipients, claimedAt: now, retry: recipients.some((r) => r.attempts > 0) });
      }
      this.pump(dq);
    }
  }

  private route(domain: string): Promise<RouteResult> {
    const now = this.now();
    const hit = this.routes.get(domain);
    if (hit && hit.until > now) return hit.result;
    const result = this.deps.router.route(domain).catch(
      (e): RouteResult => ({ kind: "temporary", reason: `routing failed: ${e instanceof Error ? e.message : String(e)}` }),
    );
    const entry = { until: now + this.o.routeTtlMs, result };
    this.routes.set(domain, entry);
    // failures are remembered briefly: enough to spare the resolver a batch's worth of lookups
    void result.then((r) => {
      if (r.kind !== "ok") entry.until = Math.min(entry.until, this.now() + 5_000);
    });
    if (this.routes.size > 10_000) this.routes.delete(this.routes.keys().next().value!);
    return result;
  }

  private destQueue(dest: Destination, domain: string): DestQueue {
    let dq = this.dests.get(dest.key);
    if (!dq) {
      dq = {
        key: dest.key, dest, domains: new Set(), limits: { maxConnections: 1, rate: null }, jobs: new JobLanes(),
        connecting: 0, workers: 0, idle: [], heldUntil: 0, timer: null,
      };
      this.dests.set(dest.key, dq);
    }
    if (!dq.domains.has(domain)) {
      dq.domains.add(domain);
      dq.limits = limitsFor(this.deps.config, dq.dest.hosts.map((h) => h.host), dq.domains);
    }
    return dq;
  }

  private routeFailed(recipients: ClaimedRecipient[], route: RouteFailure): void {
    for (const [messageId, rs] of groupBy(recipients, (r) => r.messageId)) {
      this.track(this.withMessage(messageId, rs, (msg) => this.deps.outcomes.settleRouteFailure(msg, rs, route)));
    }
  }

  private sandbox(recipients: ClaimedRecipient[]): void {
    for (const [messageId, rs] of groupBy(recipients, (r) => r.messageId)) {
      this.track(this.withMessage(messageId, rs, (msg) =>
        this.deps.outcomes.settle(msg, rs.map((r) => ({
          recipientId: r.id, outcome: "delivered", code: 250, enhanced: "2.0.0", reply: SANDBOX_REPLY,
        }))),
      ));
    }
  }

  /** Runs `fn` with the stored message; a message deleted meanwhile (`queue delete`) is simply dropped. */
  private async withMessage(messageId: MessageId, rs: ClaimedRecipient[], fn: (m: StoredMessage) => AfterCommit): Promise<void> {
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
    // claim again once a good batch fits (one claim per settled message would cost a commit each)
    if (this.windowFull && this.active.size <= this.o.window * 0.75) this.wake();
  }

  // ---- per destination ------------------------------------------------------------------------------------

  /** Hands jobs to idle connections, then opens new ones while the throttle allows and work waits. */
  private pump(dq: DestQueue): void {
    if (this.stopping) return;
    while (dq.jobs.length > 0 && dq.idle.length > 0) dq.idle.shift()!(dq.jobs.shift()!);
    while (dq.jobs.length > dq.connecting) {
      const got = this.throttle.tryAcquire(dq.key, dq.limits);
      if (isWait(got)) return this.onWait(dq, got);
      void this.worker(dq, got);
    }
  }

  private onWait(dq: DestQueue, w: Wait): void {
    if (w.reason === "concurrency") return; // a worker's release pumps again
    if (w.reason === "global") {
      this.waitingGlobal.add(dq);
      return this.closeAnIdleConnection(dq);
    }
    if (dq.workers > 0) return; // its connections carry on (and wait for rate tokens themselves)
    if (w.reason === "dead") {
      // known dead: defer without connecting, with the failure that killed it
      const reason = this.throttle.lastFailure(dq.key) ?? "destination not answering";
      this.deferJobs(dq, dq.jobs.takeAll(), `${reason} (destination marked unreachable; not tried again before ${new Date(w.waitUntil).toISOString()})`, 0);
      dq.heldUntil = w.waitUntil;
      return;
    }
    const waitMs = w.waitUntil - this.now();
    if (waitMs > 2_000) {
      // a long back-off: give the recipients back for later so they do not sit in the window
      this.handBack(dq.jobs.takeAll(), w.waitUntil);
      dq.heldUntil = w.waitUntil;
      return;
    }
    if (!dq.timer) {
      dq.timer = setTimeout(() => {
        dq.timer = null;
        this.pump(dq);
      }, Math.max(10, waitMs));
    }
  }

  /** The global cap is reached: free a slot held by an idle connection elsewhere. */
  private closeAnIdleConnection(except: DestQueue): void {
    for (const dq of this.dests.values()) {
      if (dq !== except && dq.idle.length > 0) {
        dq.idle.shift()!(null);
        return;
      }
    }
  }

  private async worker(dq: DestQueue, lease: Lease): Promise<void> {
    dq.connecting++;
    dq.workers++;
    let conn: Connection | null = null;
    let connectSignal: Signal | undefined;
    let connectError: string | undefined;
    try {
      try {
        conn = await this.deps.transport.connect(dq.dest);
      } catch (e) {
        [connectSignal, connectError] = this.connectFailed(dq, e);
        return;
      } finally {
        dq.connecting--;
      }
      for (let job = await this.nextJob(dq, conn); job; job = await this.nextJob(dq, conn)) {
        const signal = await this.send(dq, lease, conn, job);
        if (signal !== "ok" || !conn.usable || conn.sent >= this.deps.config.messages_per_connection) break;
      }
    } finally {
      dq.workers--;
      if (conn) await conn.close();
      this.throttle.release(lease, connectSignal, connectError);
      this.pump(dq);
      for (const waiting of [...this.waitingGlobal]) {
        this.waitingGlobal.delete(waiting);
        this.pump(waiting);
      }
      this.gc(dq);
    }
  }

  /** Next job for a connected worker: waits up to idleMs for one (the connection is kept for reuse). */
  private nextJob(dq: DestQueue, conn: Connection): Promise<Job | null> | Job | null {
    if (this.stopping || !conn.usable) return null;
    const job = dq.jobs.shift();
    if (job) return job;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const i = dq.idle.indexOf(take);
        if (i >= 0) dq.idle.splice(i, 1);
        resolve(null);
      }, this.o.idleMs);
      const take = (j: Job | null) => {
        clearTimeout(timer);
        // the server may have closed the connection while it waited: the job goes to someone else
        if (j && !conn.usable) {
          dq.jobs.unshift(j);
          return resolve(null);
        }
        resolve(j);
      };
      dq.idle.push(take);
    });
  }

  /** One transaction: rate token, SMTP, throttle feedback, settle. Returns the signal it gave. */
  private async send(dq: DestQueue, lease: Lease, conn: Connection, job: Job): Promise<Signal> {
    for (let w = this.throttle.admit(lease); w !== true; w = this.throttle.admit(lease)) {
      await this.pause(w.waitUntil - this.now());
      if (this.stopping) {
        this.handBack([job]);
        return "ok";
      }
    }
    const msg = this.load(job);
    if (!msg) return "ok";
    this.inFlight.set(job, conn);
    const reused = conn.sent > 0;
    const results: RecipientResult[] = [];
    for (const out of this.outbound(msg, job.recipients)) {
      try {
        results.push(...(await conn.send(out)));
      } catch (e) {
        // Connection.send promises never to throw; if it does, the outcome is unknown: defer
        results.push(...out.recipients.map((r) => localFailure(r.id, `delivery failed: ${String(e)}`, conn.mx)));
      }
    }
    // stop() gave this job up at its deadline and handed it back: the late answer is not recorded (the store
    // may be closed by now), and the next start sends it again — at least once, never lost
    if (!this.inFlight.has(job)) return "ok";
    const signal = signalOf(results);
    if (signal === "failure" && reused && !job.retried) {
      // a kept connection the server had closed meanwhile (idle timeout, restart): no reply at all, so try the
      // message once more on a fresh connection rather than defer it for a whole retry interval
      job.retried = true;
      this.inFlight.delete(job);
      if (this.stopping) this.handBack([job]);
      else dq.jobs.unshift(job);
      if (this.inFlight.size === 0) this.drained?.();
      return signal;
    }
    this.throttle.feedback(lease, signal);
    // the connection goes on with the next message while this one's settle waits for its group commit
    this.track(this.settle(msg, job, results));
    return signal;
  }

  /** The transactions for one job: per recipient when personalize says so (VERP), else one. */
  private outbound(msg: StoredMessage, recipients: ClaimedRecipient[]): OutboundMessage[] {
    if (this.deps.personalize) return this.deps.personalize(msg, recipients);
    return [{ messageId: msg.id, envelopeFrom: msg.envelopeFrom, recipients: recipients.map((r) => ({ id: r.id, address: r.address })), body: msg.body }];
  }

  /**
   * The job's message, or null when it is gone (`queue delete`) or cannot be read now: then the job is done
   * with here, handed back for later (no attempt counted) when the store failed.
   */
  private load(job: Job): StoredMessage | null {
    try {
      const msg = this.deps.claimer.loadMessage(job.messageId);
      if (!msg) this.forget(job.recipients);
      return msg;
    } catch (e) {
      this.deps.log.error("delivery_load_failed", { queue_id: job.messageId, recipients: job.recipients.length, error: e });
      this.handBack([job], this.now() + this.o.storeRetryMs);
      return null;
    }
  }

  /**
   * Outcomes log one line per recipient and attempt. A settle that does not commit: when the receiver took the
   * message for any recipient, the results wait in `unrecorded` (recipients still active) until the store takes
   * them; otherwise the lease runs out and the recipients are tried again (at least once, never lost).
   */
  private async settle(msg: StoredMessage, job: Job, results: RecipientResult[]): Promise<void> {
    let kept = false;
    try {
      await this.settles.run(() => this.deps.outcomes.settle(msg, results));
    } catch (e) {
      kept = results.some((r) => r.outcome === "delivered");
      if (kept) this.unrecorded.add({ messageId: msg.id, recipients: job.recipients, results }, e);
      else this.deps.log.error("delivery_settle_failed", { queue_id: msg.id, error: e });
    }
    // in flight until the settle has committed, so stop() does not close the store under it
    if (this.inFlight.delete(job) && this.inFlight.size === 0) this.drained?.();
    if (!kept) this.forget(job.recipients);
  }

  /** The signal and reason for the throttle: none for a mail loop (the destination is neither busy nor dead). */
  private connectFailed(dq: DestQueue, e: unknown): [Signal | undefined, string | undefined] {
    if (e instanceof LoopsBackToMyself) {
      this.deps.log.warn("delivery_loops_back", { destination: dq.key, mx: e.mx, error: e.message, status: e.status });
      // every connection to this destination would end the same way: all its waiting mail bounces now
      this.bounceJobs(dq.jobs.takeAll(), e);
      return [undefined, undefined];
    }
    const cf = e instanceof ConnectFailure ? e : new ConnectFailure(e instanceof Error ? e.message : String(e), false);
    this.deps.log.warn("delivery_connect_failed", { destination: dq.key, mx: cf.mx, error: cf.message, code: cf.code });
    // with other connections alive, they take the work; with none, the waiting mail is deferred now
    if (dq.workers === 1) this.deferJobs(dq, dq.jobs.takeAll(), cf.message, cf.code, cf.mx);
    return [cf.throttleSignal ? "throttle" : "failure", cf.message];
  }

  private deferJobs(dq: DestQueue, jobs: Job[], reason: string, code: number, mx?: string): void {
    for (const job of jobs) {
      const results = job.recipients.map((r) => localFailure(r.id, reason, mx, code));
      this.track(this.withMessage(job.messageId, job.recipients, (msg) => this.deps.outcomes.settle(msg, results)));
    }
    if (jobs.length > 0) this.deps.log.info("delivery_deferred_destination", { destination: dq.key, messages: jobs.length, reason });
  }

  private bounceJobs(jobs: Job[], loop: LoopsBackToMyself): void {
    for (const job of jobs) {
      const results = job.recipients.map((r): RecipientResult => ({
        recipientId: r.id, outcome: "bounced", code: 0, enhanced: loop.status, reply: loop.replyFor(r.domain), mx: loop.mx,
      }));
      this.track(this.withMessage(job.messageId, job.recipients, (msg) => this.deps.outcomes.settle(msg, results)));
    }
  }

  /** Leases go back without counting an attempt: due again at `at`, or else when they were due before (their place). */
  private handBack(jobs: Job[], at?: number): void {
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
   * Jobs that waited in memory for half a lease go back to the queue in their place (due when they were due), to
   * come back with a fresh lease, ahead of work that came due meanwhile; results waiting to be recorded keep their
   * leases.
   */
  private sweep(): void {
    this.extendUnrecorded();
    const old = this.now() - this.o.leaseMs / 2;
    for (const dq of [...this.dests.values()]) {
      this.gc(dq);
      this.handBack(dq.jobs.takeClaimedBefore(old));
    }
  }

  /** If this fails too (the store refuses every write), the active set still keeps a re-claim from sending them. */
  private extendUnrecorded(): void {
    const ids = this.unrecorded.recipientIds();
    if (ids.length === 0) return;
    try {
      this.deps.claimer.extend(ids, this.o.leaseMs);
    } catch (e) {
      this.deps.log.warn("delivery_lease_extend_failed", { recipients: ids.length, error: e });
    }
  }

  private gc(dq: DestQueue): void {
    if (dq.workers === 0 && dq.jobs.length === 0 && !dq.timer && dq.heldUntil <= this.now()) this.dests.delete(dq.key);
  }

  /** A wait that stop() cuts short. */
  private pause(ms: number): Promise<void> {
    if (ms <= 0 || this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.pauses.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.pauses.add(done);
    });
  }
}

/** What a transaction's replies tell the throttle. */
export function signalOf(results: readonly RecipientResult[]): Signal {
  let noReply = results.length > 0;
  for (const r of results) {
    if (r.code !== 0) noReply = false;
    if (r.code >= 400 && r.code < 500 && classifyReply(r.code, r.enhanced, r.reply) === "throttle") return "throttle";
  }
  return noReply ? "failure" : "ok";
}

function localFailure(id: RecipientId, reason: string, mx?: string, code = 0): RecipientResult {
  return { recipientId: id, outcome: "deferred", code, enhanced: enhancedFor(code >= 400 && code < 500 ? code : 0, undefined), reply: reason, mx };
}

function groupBy<T, K>(items: readonly T[], key: (t: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const it of items) push(m, key(it), it);
  return m;
}

function push<K, T>(m: Map<K, T[]>, k: K, v: T): void {
  const a = m.get(k);
  if (a) a.push(v);
  else m.set(k, [v]);
}
