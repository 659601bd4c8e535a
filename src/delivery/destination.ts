/**
 * @module delivery/destination — one receiving server set (Destination.key) and the work waiting for it: its two
 * lanes of jobs, the connections (workers) that take them within the throttle's budget, and the idle connections
 * kept for reuse. A worker runs each job's transactions (as personalize makes them) and hands the results on.
 */
import type { DeliveryConfig } from "../config/schema.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient, StoredMessage } from "../queue/claim.ts";
import { classifyReply } from "./classify.ts";
import { localFailure, type Job } from "./job.ts";
import { JobLanes } from "./lanes.ts";
import type { InFlight } from "./shutdown.ts";
import { isWait, limitsFor, type DestinationLimits, type Lease, type Signal, type Throttle, type Wait } from "./throttle.ts";
import { ConnectFailure, LoopsBackToMyself, type Connection, type Destination, type OutboundMessage, type RecipientResult, type Transport } from "./types.ts";
import type { ActiveWindow } from "./window.ts";

/** What a destination needs from the scheduler around it (loop.ts). */
export interface DestinationContext {
  readonly throttle: Throttle;
  readonly life: InFlight;
  readonly window: ActiveWindow;
  readonly log: Logger;
  /** a connection with no work stays open this long for reuse */
  readonly idleMs: number;
  now(): number;
  /** the settings in force (a reload changes them) */
  config(): DeliveryConfig;
  /** how to reach `dest` (a reload may change the transport) */
  transport(dest: Destination): Transport;
  /** the transactions that carry a job's message to its recipients here (personalize.ts); may reject */
  personalize(message: StoredMessage, recipients: readonly ClaimedRecipient[]): Promise<OutboundMessage[]>;
  /** it was just held back because it is failing (dead, or backing off): its expired mail may be bounced now */
  failing(dq: DestinationQueue): void;
  /** a connection slot came free here: destinations waiting for the global cap get their turn */
  released(dq: DestinationQueue): void;
  /** the global cap is full: close an idle connection elsewhere to make room */
  freeSlot(except: DestinationQueue): void;
}

/** A destination that cannot take mail for longer than this is held back, its jobs returned to the queue. */
const HOLD_MS = 2_000;

export class DestinationQueue {
  readonly key: string;
  readonly domains = new Set<string>();
  limits: DestinationLimits = { maxConnections: 1, rate: null };
  /** retries and first attempts, served in turn (lanes.ts) */
  readonly jobs = new JobLanes<Job>();
  /** no connections before this time (throttle back-off or dead); jobs were handed back */
  heldUntil = 0;
  /** why it is held (while heldUntil is ahead) */
  heldFor: Wait["reason"] | null = null;
  /** workers connecting: each will take a job soon */
  private connecting = 0;
  private workers = 0;
  /** connected workers waiting for a job */
  private idle: Array<(job: Job | null) => void> = [];
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly ctx: DestinationContext,
    readonly dest: Destination,
  ) {
    this.key = dest.key;
  }

  /** Serves `domain` too: its budget is looked up again (a [delivery.destination] may name the domain). */
  addDomain(domain: string): void {
    if (this.domains.has(domain)) return;
    this.domains.add(domain);
    this.relimit(this.ctx.config());
  }

  /** A reload: the budget from the new settings; with nothing waiting, its domains are forgotten (they may route elsewhere now). */
  reconfigure(config: DeliveryConfig): void {
    if (this.jobs.length === 0) this.domains.clear();
    this.relimit(config);
  }

  /**
   * Its rate gives a message less often than every HOLD_MS: it sends one message per token and is held in
   * between, so claims take only a few of its rows (queue/claim.ts `metered`). Kept while so configured: a
   * destination made afresh would not be known as metered until its first claim had taken all it could.
   */
  get metered(): boolean {
    const rate = this.limits.rate;
    return rate !== null && rate.perMs / rate.count > HOLD_MS;
  }

  /** Metered, with a job waiting: all it can send before its next hold. Claims leave it out. */
  get sated(): boolean {
    return this.metered && this.jobs.length > 0;
  }

  /**
   * Held back because it fails to take mail (dead, or in a back-off after refusals), not merely for its rate:
   * its mail past max_queue_time is bounced without another try (loop.ts).
   */
  get heldFailing(): boolean {
    return this.heldUntil > this.ctx.now() && (this.heldFor === "dead" || this.heldFor === "backoff");
  }

  /** Nothing running, waiting or held, and not metered: the scheduler may forget this destination. */
  get unused(): boolean {
    return this.workers === 0 && this.jobs.length === 0 && !this.timer && this.heldUntil <= this.ctx.now() && !this.metered;
  }

  /**
   * Hands jobs to idle connections, then opens new ones while the throttle allows and work waits. `afterFailure`:
   * a connection just failed, and its failure was recorded on the first waiting job.
   */
  pump(afterFailure = false): void {
    if (this.ctx.life.stopping) return;
    while (this.jobs.length > 0 && this.idle.length > 0) this.idle.shift()!(this.jobs.shift()!);
    while (this.jobs.length > this.connecting) {
      const got = this.ctx.throttle.tryAcquire(this.key, this.limits);
      if (isWait(got)) return this.onWait(got, afterFailure);
      void this.worker(got);
    }
  }

  /** Closes one idle connection (another destination needs the slot); false when none is idle. */
  closeIdle(): boolean {
    const idle = this.idle.shift();
    idle?.(null);
    return idle !== undefined;
  }

  /** Shutdown: no timers, idle connections closed; the jobs that have not started are returned. */
  close(): Job[] {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const idle of this.idle.splice(0)) idle(null);
    return this.jobs.takeAll();
  }

  /**
   * The throttle said not now. A destination that cannot take mail for longer than HOLD_MS (back-off, dead, its
   * next rate token) is held until then: its waiting jobs go back to the queue unclaimed, due again at that time,
   * and its domains are left out of claims meanwhile (loop.ts) — it costs one check per claim, not a walk over its
   * recipients. Mail claimed while it was already known dead gets one deferral (its first job, without
   * connecting), so each try of a dead destination is recorded on one message; `afterFailure` says the connection
   * that just failed has recorded it.
   */
  private onWait(w: Wait, afterFailure: boolean): void {
    if (w.reason === "concurrency") return; // a worker's release pumps again
    if (w.reason === "global") return this.ctx.freeSlot(this);
    if (this.workers > 0) return; // its connections carry on (and wait for rate tokens themselves)
    if (w.reason === "dead" && !afterFailure) {
      const reason = this.ctx.throttle.lastFailure(this.key) ?? "destination not answering";
      this.deferFirst(`${reason} (destination marked unreachable; not tried again before ${new Date(w.waitUntil).toISOString()})`, 0);
    }
    const waitMs = w.waitUntil - this.ctx.now();
    if (w.reason === "dead" || waitMs > HOLD_MS) return this.hold(w.waitUntil, w.reason);
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(10, waitMs));
  }

  private hold(until: number, reason: Wait["reason"]): void {
    const jobs = this.jobs.takeAll();
    this.ctx.window.handBack(jobs, until);
    this.heldUntil = until;
    this.heldFor = reason;
    if (this.heldFailing) this.ctx.failing(this);
    if (jobs.length > 0) {
      const recipients = jobs.reduce((n, j) => n + j.recipients.length, 0);
      this.ctx.log.info("delivery_destination_held_back", { destination: this.key, reason, until: new Date(until).toISOString(), recipients });
    }
  }

  private async worker(lease: Lease): Promise<void> {
    this.connecting++;
    this.workers++;
    let conn: Connection | null = null;
    let connectSignal: Signal | undefined;
    let connectError: string | undefined;
    try {
      try {
        conn = await this.ctx.transport(this.dest).connect(this.dest);
      } catch (e) {
        [connectSignal, connectError] = this.connectFailed(e);
        return;
      } finally {
        this.connecting--;
      }
      for (let job = await this.nextJob(conn); job; job = await this.nextJob(conn)) {
        const signal = await this.send(lease, conn, job);
        if (signal !== "ok" || !conn.usable || conn.sent >= this.ctx.config().messages_per_connection) break;
      }
    } finally {
      this.workers--;
      if (conn) await conn.close();
      this.ctx.throttle.release(lease, connectSignal, connectError);
      this.pump(connectSignal !== undefined);
      this.ctx.released(this);
    }
  }

  /** Next job for a connected worker: waits up to idleMs for one (the connection is kept for reuse). */
  private nextJob(conn: Connection): Promise<Job | null> | Job | null {
    if (this.ctx.life.stopping || !conn.usable) return null;
    const job = this.jobs.shift();
    if (job) return job;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const i = this.idle.indexOf(take);
        if (i >= 0) this.idle.splice(i, 1);
        resolve(null);
      }, this.ctx.idleMs);
      const take = (j: Job | null) => {
        clearTimeout(timer);
        // the server may have closed the connection while it waited: the job goes to someone else
        if (j && !conn.usable) {
          this.jobs.unshift(j);
          return resolve(null);
        }
        resolve(j);
      };
      this.idle.push(take);
    });
  }

  /**
   * One job: rate token, its transactions, throttle feedback, settle. Returns the signal it gave, or "held" when
   * the next token (or the end of a back-off) is more than HOLD_MS away: the job goes back to the head of its
   * lane and the connection closes, and pump() holds the destination until then.
   */
  private async send(lease: Lease, conn: Connection, job: Job): Promise<Signal | "held"> {
    const { throttle, life, window } = this.ctx;
    for (let w = throttle.admit(lease); w !== true; w = throttle.admit(lease)) {
      if (w.waitUntil - this.ctx.now() > HOLD_MS) {
        this.jobs.unshift(job);
        return "held";
      }
      await life.pause(w.waitUntil - this.ctx.now());
      if (life.stopping) {
        window.handBack([job]);
        return "ok";
      }
    }
    const msg = window.load(job);
    if (!msg) return "ok";
    const reused = conn.sent > 0;
    life.begin(job, conn);
    const sent = await this.transact(conn, msg, job);
    // stop() gave this job up at its deadline and handed it back: the late answer is not recorded (the store
    // may be closed by now), and the next start sends it again — at least once, never lost
    if (!life.has(job)) return "ok";
    const signal = sent.unsent ? "ok" : signalOf(sent.results);
    if (signal === "failure" && reused && !job.retried) {
      // a kept connection the server had closed meanwhile (idle timeout, restart): no reply at all, so try the
      // message once more on a fresh connection rather than defer it for a whole retry interval
      job.retried = true;
      life.end(job);
      if (life.stopping) window.handBack([job]);
      else this.jobs.unshift(job);
      return signal;
    }
    if (!sent.unsent) throttle.feedback(lease, signal);
    // the connection goes on with the next message while this one's settle waits for its group commit
    life.track(window.settle(msg, job, sent.results).finally(() => life.end(job)));
    return signal;
  }

  /**
   * The job's transactions, one after another on `conn`. When personalize fails, nothing is sent (`unsent`):
   * an unknown error is temporary, so the recipients are deferred, and the destination is told nothing.
   */
  private async transact(conn: Connection, msg: StoredMessage, job: Job): Promise<{ results: RecipientResult[]; unsent?: true }> {
    let outbound: OutboundMessage[];
    try {
      outbound = await this.ctx.personalize(msg, job.recipients);
    } catch (e) {
      this.ctx.log.error("personalize_failed", { queue_id: msg.id, recipients: job.recipients.length, error: e });
      const reason = `personalizing the message failed: ${e instanceof Error ? e.message : String(e)}`;
      return { results: job.recipients.map((r) => localFailure(r.id, reason)), unsent: true };
    }
    const results: RecipientResult[] = [];
    for (const out of outbound) {
      try {
        results.push(...(await conn.send(out)));
      } catch (e) {
        // Connection.send promises never to throw; if it does, the outcome is unknown: defer
        results.push(...out.recipients.map((r) => localFailure(r.id, `delivery failed: ${String(e)}`, conn.mx)));
      }
    }
    return { results };
  }

  /** The signal and reason for the throttle: none for a mail loop (the destination is neither busy nor dead). */
  private connectFailed(e: unknown): [Signal | undefined, string | undefined] {
    if (e instanceof LoopsBackToMyself) {
      this.ctx.log.warn("delivery_loops_back", { destination: this.key, mx: e.mx, error: e.message, status: e.status });
      // every connection to this destination would end the same way: all its waiting mail bounces now
      this.ctx.window.settleUnsent(this.jobs.takeAll(), (r) => ({
        recipientId: r.id, outcome: "bounced", code: 0, enhanced: e.status, reply: e.replyFor(r.domain), mx: e.mx,
      }));
      return [undefined, undefined];
    }
    const cf = e instanceof ConnectFailure ? e : new ConnectFailure(e instanceof Error ? e.message : String(e), false);
    this.ctx.log.warn("delivery_connect_failed", { destination: this.key, mx: cf.mx, error: cf.message, code: cf.code });
    // with other connections alive, they take the work; with none, the try is recorded on the mail it was for
    // (the first waiting job), and pump() holds the rest back when the throttle says wait
    if (this.workers === 1) this.deferFirst(cf.message, cf.code, cf.mx);
    return [cf.throttleSignal ? "throttle" : "failure", cf.message];
  }

  private deferFirst(reason: string, code: number, mx?: string): void {
    const job = this.jobs.shift();
    if (!job) return;
    this.ctx.window.settleUnsent([job], (r) => localFailure(r.id, reason, mx, code));
    this.ctx.log.info("delivery_deferred_destination", { destination: this.key, messages: 1, reason });
  }

  private relimit(config: DeliveryConfig): void {
    this.limits = limitsFor(config, this.dest.hosts.map((h) => h.host), this.domains);
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
