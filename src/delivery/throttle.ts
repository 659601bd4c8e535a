/**
 * @module delivery/throttle — how many connections and messages each receiving server gets, adapted to
 * its replies (pure; takes a clock). Design after Postfix's SCHEDULER_README: a per-destination
 * concurrency window that grows by one after a whole cohort of successes and is cut at once on a
 * throttle signal (AIMD), an optional token-bucket rate, a global cap, and dead-destination detection
 * kept apart from the concurrency feedback.
 */
import type { Gauge, Metrics } from "../observe/metrics.ts";
import type { DeliveryConfig, DestinationConfig, Rate } from "../config/schema.ts";
import { fullBucket, isRefilled, takeToken, type TokenBucket } from "../mail/token-bucket.ts";

/** What a finished message or connection attempt tells the throttle. */
export type Signal =
  /** the server talked normally (2xx, 4xx or 5xx about the mail itself) */
  | "ok"
  /** 421, 4.7.x "too many"/"rate", refused connection: the server wants less of us */
  | "throttle"
  /** no usable conversation: connect timeout, unreachable, TLS/protocol failure */
  | "failure";

/** The configured budget of one destination (after per-destination overrides). */
export interface DestinationLimits {
  maxConnections: number;
  rate: Rate | null;
}

export interface ThrottleOptions {
  /** global cap on leases (delivery.concurrency) */
  concurrency: number;
  /** no new connection/message for this long after a throttle signal; further signals in it don't cut again */
  backoffMs?: number;
  /** time without throttle signals before a cut rate starts to recover */
  rateQuietMs?: number;
  /** consecutive connection attempts that fail before the destination is declared dead */
  deadAfter?: number;
  /** first dead period; doubles while probes keep failing, up to deadMaxMs */
  deadMs?: number;
  deadMaxMs?: number;
  /**
   * A new connection opens at most this long before the destination's next rate token; a rate slower than one
   * message in this time gets one connection (more would only wait for tokens). Default 2 s.
   */
  connectAheadMs?: number;
}

/** A connection slot at one destination; give it back with release(). */
export interface Lease {
  readonly key: string;
  /** set once the server gave any normal conversation on this lease */
  sawOk: boolean;
  /** the one connection let through to a dead destination when its dead period is over */
  readonly probe?: boolean;
  released: boolean;
}

/** Not now: ask again at `waitUntil` (ms since epoch). */
export interface Wait {
  waitUntil: number;
  reason: "global" | "concurrency" | "backoff" | "rate" | "dead";
}

export interface DestinationSnapshot {
  key: string;
  /** current concurrency window and the configured maximum */
  limit: number;
  max: number;
  inUse: number;
  /** current rate (configured rate scaled down by throttling), or null when unlimited */
  rate: Rate | null;
  backoffUntil: number | null;
  dead: boolean;
  deadUntil: number | null;
  consecutiveFailures: number;
  /** what the last failed connection attempt said, until a conversation succeeds */
  lastFailure: string | null;
}

export interface ThrottleSnapshot {
  concurrency: number;
  inUse: number;
  destinations: DestinationSnapshot[];
}

interface State {
  key: string;
  max: number;
  limit: number;
  inUse: number;
  /** successes since the window last changed (the cohort) */
  successes: number;
  rate: Rate | null;
  /** 1 = the configured rate; halved on throttle, recovering after a quiet period */
  rateFactor: number;
  /** the rate's token (unused without a rate) */
  bucket: TokenBucket;
  backoffUntil: number;
  lastThrottleAt: number;
  consecutiveFailures: number;
  deadUntil: number;
  deadMs: number;
  /** a dead destination's single probe connection is out */
  probing: boolean;
  lastFailure: string | null;
}

const MIN_RATE_FACTOR = 1 / 16;

export function isWait(x: Lease | Wait | true): x is Wait {
  return typeof x === "object" && "waitUntil" in x;
}

export class Throttle {
  private states = new Map<string, State>();
  private inUseTotal = 0;
  private o: Required<ThrottleOptions>;

  constructor(opts: ThrottleOptions, private now: () => number = Date.now) {
    this.o = {
      backoffMs: 5_000,
      rateQuietMs: 30_000,
      deadAfter: 3,
      deadMs: 60_000,
      deadMaxMs: 15 * 60_000,
      connectAheadMs: 2_000,
      ...opts,
    };
  }

  /** A reload's `delivery.concurrency`: slots in use above a lower cap are given back as they finish. */
  setConcurrency(concurrency: number): void {
    this.o = { ...this.o, concurrency };
  }

  /** A connection slot at `key`, or when to ask again. */
  tryAcquire(key: string, limits: DestinationLimits): Lease | Wait {
    const now = this.now();
    const s = this.state(key, limits, now);
    if (s.deadUntil > 0) {
      if (now < s.deadUntil) return { waitUntil: s.deadUntil, reason: "dead" };
      // dead period over: one probe at a time until a conversation succeeds
      if (s.probing) return { waitUntil: now + this.o.backoffMs, reason: "dead" };
    }
    if (now < s.backoffUntil) return { waitUntil: s.backoffUntil, reason: "backoff" };
    const tokenIn = this.tokenIn(s, now);
    if (tokenIn > this.o.connectAheadMs) return { waitUntil: now + tokenIn, reason: "rate" };
    if (s.inUse >= this.connectionsFor(s)) return { waitUntil: now + this.o.backoffMs, reason: "concurrency" };
    if (this.inUseTotal >= this.o.concurrency) return { waitUntil: now + 1_000, reason: "global" };
    s.inUse++;
    this.inUseTotal++;
    if (s.deadUntil === 0) return { key, sawOk: false, released: false };
    s.probing = true;
    return { key, sawOk: false, released: false, probe: true };
  }

  /** Takes one rate token for one message on `lease`, or says when one will be there. */
  admit(lease: Lease): true | Wait {
    const now = this.now();
    const s = this.states.get(lease.key);
    if (!s) return true;
    if (now < s.backoffUntil) return { waitUntil: s.backoffUntil, reason: "backoff" };
    if (!s.rate) return true;
    const wait = takeToken(s.bucket, BUCKET_CAPACITY, this.perMs(s)!, now);
    return wait === 0 ? true : { waitUntil: now + wait, reason: "rate" };
  }

  /** What one message (or the connection attempt) on `lease` showed. */
  feedback(lease: Lease, signal: Signal): void {
    const s = this.states.get(lease.key);
    if (!s) return;
    const now = this.now();
    if (signal === "ok") {
      lease.sawOk = true;
      this.alive(s);
      if (++s.successes >= s.limit) this.grow(s, now);
    } else if (signal === "throttle") {
      this.cut(s, now);
    }
  }

  /**
   * Gives the slot back; `signal` is the outcome of the last thing done on it, if not reported yet, and
   * `reason` what a failed connection attempt said (kept for deferring mail while the destination is dead).
   */
  release(lease: Lease, signal?: Signal, reason?: string): void {
    if (lease.released) return;
    if (signal) this.feedback(lease, signal);
    lease.released = true;
    const s = this.states.get(lease.key);
    if (!s) return;
    s.inUse--;
    this.inUseTotal--;
    // a connection that never had a normal conversation counts toward dead-destination detection
    if (!lease.sawOk && signal && signal !== "ok") {
      if (reason) s.lastFailure = reason;
      this.connectFailed(s, lease.probe === true);
    }
    if (lease.probe) s.probing = false;
    this.reap(s);
  }

  /** Why the destination's connections last failed, while that is its state; null otherwise. */
  lastFailure(key: string): string | null {
    return this.states.get(key)?.lastFailure ?? null;
  }

  snapshot(): ThrottleSnapshot {
    const now = this.now();
    // destinations whose tokens have come back since their last release are forgotten now
    for (const s of [...this.states.values()]) this.reap(s);
    return {
      concurrency: this.o.concurrency,
      inUse: this.inUseTotal,
      destinations: [...this.states.values()].map((s) => ({
        key: s.key,
        limit: s.limit,
        max: s.max,
        inUse: s.inUse,
        rate: s.rate ? { count: s.rate.count * s.rateFactor, perMs: s.rate.perMs } : null,
        backoffUntil: s.backoffUntil > now ? s.backoffUntil : null,
        dead: s.deadUntil > 0,
        deadUntil: s.deadUntil > 0 ? s.deadUntil : null,
        consecutiveFailures: s.consecutiveFailures,
        lastFailure: s.lastFailure,
      })),
    };
  }

  /** The rate in tokens a millisecond, as cut by throttling; null without a rate. */
  private perMs(s: State): number | null {
    return s.rate ? (s.rate.count * s.rateFactor) / s.rate.perMs : null;
  }

  /** Milliseconds until the destination's next rate token (0: one is there, or no rate); takes nothing. */
  private tokenIn(s: State, now: number): number {
    const perMs = this.perMs(s);
    return perMs === null ? 0 : takeToken({ ...s.bucket }, BUCKET_CAPACITY, perMs, now);
  }

  /** The concurrency window, or one connection when the rate gives a token less often than connectAheadMs. */
  private connectionsFor(s: State): number {
    const perMs = this.perMs(s);
    return perMs !== null && 1 / perMs > this.o.connectAheadMs ? 1 : s.limit;
  }

  private state(key: string, limits: DestinationLimits, now: number): State {
    let s = this.states.get(key);
    const max = Math.max(1, limits.maxConnections);
    if (!s) {
      s = {
        key, max, limit: max, inUse: 0, successes: 0, rate: limits.rate, rateFactor: 1,
        bucket: fullBucket(BUCKET_CAPACITY, now),
        backoffUntil: 0, lastThrottleAt: 0, consecutiveFailures: 0, deadUntil: 0, deadMs: this.o.deadMs, probing: false,
        lastFailure: null,
      };
      this.states.set(key, s);
    }
    // configuration can differ as more domains are seen for a key: follow the latest
    s.max = max;
    if (s.limit > max) s.limit = max;
    s.rate = limits.rate;
    return s;
  }

  /** Multiplicative decrease, once per back-off period (Postfix corrects overload at once, but a burst of
   *  421s from connections opened together is one signal, not five). */
  private cut(s: State, now: number): void {
    s.lastThrottleAt = now;
    if (now < s.backoffUntil) return;
    s.limit = Math.max(1, Math.floor(s.limit / 2));
    s.rateFactor = Math.max(MIN_RATE_FACTOR, s.rateFactor / 2);
    s.successes = 0;
    s.backoffUntil = now + this.o.backoffMs;
  }

  /** Additive increase: +1 after `limit` successes (g(N) = 1/N); the rate recovers once things are quiet. */
  private grow(s: State, now: number): void {
    s.successes = 0;
    if (s.limit < s.max) s.limit++;
    if (s.rateFactor < 1 && now - s.lastThrottleAt >= this.o.rateQuietMs) {
      s.rateFactor = Math.min(1, s.rateFactor * 2);
    }
  }

  private alive(s: State): void {
    s.consecutiveFailures = 0;
    s.lastFailure = null;
    s.deadUntil = 0;
    s.deadMs = this.o.deadMs;
  }

  /**
   * A failed probe keeps the destination dead for twice as long; connections opened before it was found dead
   * (fifty failing together) leave its dead time as it is, instead of doubling it once each.
   */
  private connectFailed(s: State, probe: boolean): void {
    const now = this.now();
    s.consecutiveFailures++;
    if (s.deadUntil > 0) {
      if (!probe) return;
      s.deadMs = Math.min(this.o.deadMaxMs, s.deadMs * 2);
      s.deadUntil = now + s.deadMs;
    } else if (s.consecutiveFailures >= this.o.deadAfter) {
      s.deadUntil = now + s.deadMs;
    }
  }

  /** Forget destinations that are idle and back to their configured budget, tokens included: a state made
   *  afresh must not give a destination more than the one it replaces would (else every release resets the rate). */
  private reap(s: State): void {
    const now = this.now();
    const pristine = s.inUse === 0 && s.limit === s.max && s.rateFactor === 1 && s.deadUntil === 0
      && s.consecutiveFailures === 0 && s.backoffUntil <= now
      && (!s.rate || isRefilled(s.bucket, BUCKET_CAPACITY, s.rate.count / s.rate.perMs, now));
    if (pristine) this.states.delete(s.key);
  }
}

/**
 * The rate's bucket holds one token, and a new destination's starts with it: messages go evenly spaced, and no
 * span of the rate's period ever sees more than count + 1 (a bucket of B tokens allows count + B after a pause;
 * "10/s" with one second's worth of tokens sent 19 in its first second). Timer lateness at high rates costs a
 * little throughput rather than ever going over.
 */
const BUCKET_CAPACITY = 1;

/**
 * The budget for a destination: `[delivery.destination."name"]` where name is a recipient domain routed
 * there or one of its MX hosts, exactly or as a "*.suffix" pattern (or "*"). The most specific name
 * wins: exact before pattern, longer pattern before shorter. Unset fields fall back to `[delivery]`.
 */
export function limitsFor(delivery: DeliveryConfig, hosts: readonly string[], domains: Iterable<string>): DestinationLimits {
  let best: DestinationConfig | undefined;
  let bestScore = -1;
  const names = [...hosts, ...domains].map((n) => n.toLowerCase().replace(/\.$/, ""));
  for (const [pattern, cfg] of Object.entries(delivery.destination)) {
    for (const name of names) {
      const score = matchScore(pattern, name);
      if (score > bestScore) {
        best = cfg;
        bestScore = score;
      }
    }
  }
  return {
    maxConnections: best?.per_destination_connections ?? delivery.per_destination_connections,
    rate: best?.rate ?? null,
  };
}

/** -1 no match; exact names score above every pattern; longer patterns above shorter. */
function matchScore(pattern: string, name: string): number {
  if (pattern === name) return 100_000;
  if (pattern === "*") return 0;
  if (pattern.startsWith("*.") && name.endsWith(pattern.slice(1))) return pattern.length;
  return -1;
}

/**
 * The throttle's state as gauges, read from `snapshot` at each scrape. A destination without a rate has no
 * `outpost_destination_rate_per_second` sample: unlimited is not 0 (a rate of 0 would mean nothing is sent).
 */
export function throttleGauges(metrics: Metrics, snapshot: () => ThrottleSnapshot): void {
  const perDestination = (name: string, help: string, value: (d: DestinationSnapshot) => number | null) =>
    metrics.gauge({
      name,
      help,
      labelNames: ["destination"],
      collect: (g: Gauge<"destination">) => {
        for (const d of snapshot().destinations) {
          const v = value(d);
          if (v !== null) g.set({ destination: d.key }, v);
        }
      },
    });
  metrics.gauge({ name: "outpost_delivery_connections", help: "Outbound SMTP connections in use.", collect: (g) => g.set(snapshot().inUse) });
  metrics.gauge({
    name: "outpost_delivery_concurrency",
    help: "Global cap on outbound connections (delivery.concurrency).",
    collect: (g) => g.set(snapshot().concurrency),
  });
  perDestination("outpost_destination_connection_limit", "Current adaptive concurrency window per destination.", (d) => d.limit);
  perDestination("outpost_destination_connection_max", "Configured maximum connections per destination.", (d) => d.max);
  perDestination("outpost_destination_connections", "Connections in use per destination.", (d) => d.inUse);
  perDestination("outpost_destination_rate_per_second",
    "Current message rate per destination (the configured rate, lowered while throttled); no sample when unlimited.",
    (d) => (d.rate ? (d.rate.count * 1000) / d.rate.perMs : null));
  perDestination("outpost_destination_backoff", "1 while the destination is in a throttle back-off.", (d) => (d.backoffUntil ? 1 : 0));
  perDestination("outpost_destination_dead", "1 while the destination is considered dead.", (d) => (d.dead ? 1 : 0));
}
