/**
 * @module events/webhooks — the outbox worker: leases due rows per hook (a few at a time), POSTs each EVENT signed,
 * and settles it: delivered on a 2xx, retried on the schedule otherwise, expired after 24 h. At least once: a row is
 * settled only after its answer, so a crash mid-POST sends it again (receivers dedupe by event id).
 *
 * It runs beside intake and delivery and shares nothing with them but the database, where its work per round is a
 * bounded claim per hook and one small commit per answer: a receiver that is down or slow costs its own hook's few
 * request slots and nothing else.
 */
import type { Database } from "bun:sqlite";
import { withLazyCommit } from "../db/client.ts";
import type { UserId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import { Outbox, type OutboxItem } from "./outbox.ts";
import type { Webhook } from "./record.ts";
import { describeFailure, postWebhook, signRequest, WEBHOOK_TIMEOUTS, type PostResult, type PostTimeouts } from "./webhook-post.ts";
import { nextAttemptAt, WEBHOOK_RETRY, type RetryPolicy } from "./webhook-schedule.ts";

/** how long a shutdown waits for the answers to POSTs already out */
const STOP_GRACE_MS = 1000;

export interface WebhookWorkerOptions {
  /** requests in flight per hook (default 4) */
  concurrency?: number;
  /** ms between looks for due rows when nothing wakes the worker (default 1 s) */
  pollMs?: number;
  /** ms a row stays leased to one attempt (default 60 s: longer than a request may take) */
  leaseMs?: number;
  timeouts?: PostTimeouts;
  policy?: RetryPolicy;
  /** ms between prunes of finished rows (default 1 h; the first runs at start) */
  pruneEveryMs?: number;
}

export interface WebhookWorkerDeps {
  sqlite: Database;
  hooks: readonly Webhook[];
  /** ms a finished row is kept (`webhook_retention`) */
  retention: number;
  log: Logger;
  /** the runtime's registry (default: one of its own) */
  metrics?: Metrics;
  /** a user's name for the log lines (auth/users.ts UserNames); default: none known */
  userName?: (id: UserId | null) => string | null;
  now?: () => number;
  random?: () => number;
  options?: WebhookWorkerOptions;
}

/** What the worker counts per hook; the backlog is read from the outbox's pending rows at each scrape. */
function webhookMetrics(metrics: Metrics, pendingByHook: () => Map<string, number>) {
  metrics.gauge({
    name: "outpost_webhook_pending",
    help: "Webhook events waiting to be sent, by hook (the backlog).",
    labelNames: ["hook"],
    collect: (g) => {
      for (const [hook, n] of pendingByHook()) g.set({ hook }, n);
    },
  });
  return {
    requests: metrics.counter({
      name: "outpost_webhook_requests_total",
      help: "Webhook POSTs answered or failed, by hook and result (delivered: a 2xx; failed: anything else, retried or expired).",
      labelNames: ["hook", "result"],
    }),
    expired: metrics.counter({
      name: "outpost_webhook_expired_total",
      help: "Webhook events given up after 24 h without a 2xx, by hook.",
      labelNames: ["hook"],
    }),
    orphaned: metrics.counter({
      name: "outpost_webhook_orphaned_total",
      help: "Pending webhook events stopped because their hook left the config, by hook.",
      labelNames: ["hook"],
    }),
  };
}

export class WebhookWorker {
  readonly name = "webhooks";
  private readonly outbox: Outbox;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly opts: Required<WebhookWorkerOptions>;
  private hooks: readonly Webhook[];
  private retention: number;
  /** rows whose POST is out, by id, and the hook each counts against */
  private readonly inFlight = new Map<number, { hook: string; done: Promise<void> }>();
  private readonly counters: ReturnType<typeof webhookMetrics>;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pruner: ReturnType<typeof setInterval> | null = null;
  /** polling (start() was called) and not stopped */
  private running = false;
  /** rows given back by stop(): their late answers change nothing */
  private readonly abandoned = new Set<number>();
  /** answers waiting for the next settle commit */
  private settling: { settle: () => void; resolve: () => void }[] = [];
  /** aborts the POSTs still out when stop() gives up waiting */
  private readonly shutdown = new AbortController();

  constructor(private deps: WebhookWorkerDeps) {
    this.outbox = new Outbox(deps.sqlite);
    this.counters = webhookMetrics(deps.metrics ?? new Metrics(deps.log), () => this.outbox.pendingByHook());
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.opts = {
      concurrency: 4, pollMs: 1000, leaseMs: 60_000, timeouts: WEBHOOK_TIMEOUTS, policy: WEBHOOK_RETRY, pruneEveryMs: 3_600_000,
      ...deps.options,
    };
    this.hooks = deps.hooks;
    this.retention = deps.retention;
    // `serve` holds the database's lock: leases still in it belong to a process that died mid-POST
    const recovered = this.outbox.recoverLeases(this.now());
    if (recovered > 0) deps.log.info("webhook_leases_recovered", { count: recovered });
    const adopted = this.outbox.adoptUnnamed(this.hooks);
    if (adopted > 0) deps.log.info("webhook_rows_adopted", { count: adopted });
    this.orphanRemoved();
  }

  /** Starts polling and pruning (tests that drive rounds by hand with `runDue` leave it stopped). */
  start(): this {
    this.running = true;
    this.prune();
    this.pruner = setInterval(() => this.prune(), this.opts.pruneEveryMs);
    this.pruner.unref();
    this.schedule(0);
    this.deps.log.info("webhooks_started", { hooks: this.hooks.map((h) => h.name) });
    return this;
  }

  /**
   * A reload (SIGHUP): the new hooks are used from the next round (a changed URL or secret for pending rows too);
   * the pending rows of hooks no longer configured are stopped as `orphaned`, logged and counted.
   */
  reconfigure(hooks: readonly Webhook[], retention = this.retention): void {
    this.hooks = hooks;
    this.retention = retention;
    this.orphanRemoved();
    this.schedule(0);
  }

  /** One round: each hook with a free request slot leases due rows and sends them. Returns the POSTs started. */
  round(): number {
    let started = 0;
    for (const hook of this.hooks) {
      const busy = [...this.inFlight.values()].filter((f) => f.hook === hook.name).length;
      const now = this.now();
      let items: OutboxItem[];
      try {
        // lazy (no fsync): a lease lost to a power cut only means the rows are due again, and serve's start
        // clears leases anyway; the POSTs are at least once
        items = withLazyCommit(this.deps.sqlite, () => this.outbox.claim(hook.name, now, this.opts.concurrency - busy, now + this.opts.leaseMs));
      } catch (e) {
        this.deps.log.error("webhook_claim_failed", { hook: hook.name, error: e });
        continue;
      }
      for (const item of items) {
        const done = this.send(hook, item).finally(() => {
          this.inFlight.delete(item.id);
          this.schedule(0);
        });
        this.inFlight.set(item.id, { hook: hook.name, done });
        started++;
      }
    }
    return started;
  }

  /** Rounds until nothing more is due, each waiting for its answers (tests, with an injected clock). */
  async runDue(): Promise<number> {
    let total = 0;
    for (let n = this.round(); n > 0 || this.inFlight.size > 0; n = this.round()) {
      total += n;
      await Promise.all([...this.inFlight.values()].map((f) => f.done));
    }
    return total;
  }

  /** Deletes finished rows older than `webhook_retention`; returns how many. */
  prune(): number {
    try {
      const n = this.outbox.prune(this.now() - this.retention);
      if (n > 0) this.deps.log.info("webhook_outbox_pruned", { deleted: n });
      return n;
    } catch (e) {
      this.deps.log.error("webhook_prune_failed", { error: e });
      return 0;
    }
  }

  /**
   * Stops leasing at once. POSTs out get a moment to be answered and settled (a second, within `deadline`); those
   * still out then are abandoned and their rows given back, due at the next start: a receiver that hangs never
   * holds up a shutdown, and it may see that event again (at least once).
   */
  async stop(deadline = Date.now() + STOP_GRACE_MS): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.pruner) clearInterval(this.pruner);
    const all = Promise.all([...this.inFlight.values()].map((f) => f.done));
    let timeout: ReturnType<typeof setTimeout> | undefined;
    const grace = Math.max(0, Math.min(deadline, Date.now() + STOP_GRACE_MS) - Date.now());
    await Promise.race([all, new Promise<void>((r) => (timeout = setTimeout(r, grace)))]);
    clearTimeout(timeout);
    const left = [...this.inFlight.keys()];
    if (left.length === 0) return;
    for (const id of left) this.abandoned.add(id);
    this.shutdown.abort();
    this.outbox.release(left, this.now());
    this.deps.log.info("webhooks_abandoned", { count: left.length, message: "requests still out at shutdown: sent again at the next start" });
  }

  private async send(hook: Webhook, item: OutboxItem): Promise<void> {
    let result: PostResult;
    try {
      result = await postWebhook(hook.url, signRequest(hook.secret, item.event, this.now()), this.opts.timeouts, this.shutdown.signal);
    } catch (e) {
      result = { status: null, error: e instanceof Error ? e.message : String(e) };
    }
    if (this.abandoned.delete(item.id)) return;
    await this.inBatch(() => this.settle(hook, item, result));
  }

  /**
   * Answers that arrive together settle in one commit (one fsync for several rows, not one each), so a flood of
   * fast answers or failures costs the database little next to intake and delivery. Resolves once committed.
   */
  private inBatch(settle: () => void): Promise<void> {
    return new Promise((resolve) => {
      this.settling.push({ settle, resolve });
      if (this.settling.length > 1) return;
      setImmediate(() => {
        const batch = this.settling.splice(0);
        try {
          // lazy (no fsync): no client waits for it, and a settle lost to a power cut only means the events are
          // POSTed again (at least once); the next sync of the WAL makes it durable (db/durable.ts)
          withLazyCommit(this.deps.sqlite, () => this.deps.sqlite.transaction(() => {
            for (const b of batch) b.settle();
          }).immediate());
        } catch (e) {
          // their leases run out and they are sent again
          this.deps.log.error("webhook_settle_failed", { rows: batch.length, error: e });
        }
        for (const b of batch) b.resolve();
      });
    });
  }

  private settle(hook: Webhook, item: OutboxItem, result: PostResult): void {
    const now = this.now();
    // the mail log's shape (docs/logs.md): queue_id and user tie the attempt to the message's other lines
    const fields = {
      queue_id: item.messageId, user: this.deps.userName?.(item.userId) ?? null, hook: hook.name, event_id: item.event.id,
      type: item.event.type, recipient: item.event.recipient, attempt: item.attempts + 1,
    };
    if (result.status !== null && result.status >= 200 && result.status < 300) {
      this.outbox.delivered(item, now);
      this.counters.requests.inc({ hook: hook.name, result: "delivered" });
      this.deps.log.info("webhook_delivered", { ...fields, status: result.status });
      return;
    }
    const error = describeFailure(result);
    this.counters.requests.inc({ hook: hook.name, result: "failed" });
    const next = nextAttemptAt(item.attempts + 1, item.startedAt, now, this.random, this.opts.policy);
    if (next === null) {
      this.outbox.expire(item, now, error);
      this.counters.expired.inc({ hook: hook.name });
      this.deps.log.warn("webhook_expired", { ...fields, error, since: new Date(item.startedAt).toISOString() });
      return;
    }
    this.outbox.retry(item, now, error, next);
    this.deps.log.warn("webhook_failed", { ...fields, error, next_attempt: new Date(next).toISOString() });
  }

  private orphanRemoved(): void {
    const stopped = this.outbox.orphan(this.hooks.map((h) => h.name), this.now());
    for (const [hook, rows] of stopped) {
      this.counters.orphaned.inc({ hook }, rows);
      this.deps.log.warn("webhook_orphaned", {
        hook, rows, message: `hook ${hook} is no longer configured: its ${rows} pending event(s) will not be sent (outpost webhook retry ${hook} once it is back)`,
      });
    }
  }

  /** The next round in `ms` (0: as soon as possible); an earlier one already set wins. */
  private schedule(ms: number): void {
    if (!this.running || (ms > 0 && this.timer)) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.running) return;
      this.round();
      this.schedule(this.opts.pollMs);
    }, ms);
  }
}
