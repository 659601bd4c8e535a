/**
 * @module smtp/auth-guard — limits AUTH guesses per client (an IPv4 address, an IPv6 /64: config/units clientKey).
 * At most `failuresBeforeBlock` guesses are ever *verified* within `blockMs`, however many arrive at once: a
 * guess reserves a place before its password is checked (the slow hash) and the reservations still in flight
 * count with the failures. A failure turns its place into a counted failure; reaching `failuresBeforeBlock`
 * blocks the client (421 4.7.0) for `blockMs`. A success gives its place back. A guess that finds every place
 * taken by guesses in flight waits for one of them to finish, so a smart host's burst of connections (all with
 * the right password) is served a few at a time instead of refused. smtp-server counts nothing itself.
 *
 * Successes do not reset the count: one known password must not buy unlimited guesses at others.
 * Also here: open connections per client and in total (smtp.max_connections_per_ip, smtp.max_connections).
 */

export interface AuthGuardOptions {
  failuresBeforeBlock: number;
  blockMs: number;
  now?: () => number;
}

interface Entry {
  /** times of the failures still inside the window, oldest first */
  failures: number[];
  /** guesses being verified now */
  inFlight: number;
  blockedUntil: number;
  /** guesses waiting for a place; woken (all of them, to look again) whenever a guess in flight finishes */
  waiting: Array<() => void>;
}

/** A place for one guess, taken by AuthGuard.reserve; settle it exactly once. */
export interface GuessSlot {
  /** the password was right: the place is free again, nothing counted */
  release(): void;
  /** the password was wrong: counted as a failure; says whether the client is blocked now */
  fail(): { failures: number; blocked: boolean };
}

/** How many clients we remember before sweeping out the stale ones (bounds memory under a spray of IPs). */
const SWEEP_AT = 10_000;

export class AuthGuard {
  private entries = new Map<string, Entry>();
  private now: () => number;
  /** size that triggers the next sweep; doubles when a sweep frees little, so a spray of live IPs costs O(1) amortised */
  private sweepAt = SWEEP_AT;

  constructor(private opts: AuthGuardOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds this client is still blocked for, 0 when it is not. */
  blockedFor(client: string): number {
    const e = this.entries.get(client);
    return e ? Math.max(0, e.blockedUntil - this.now()) : 0;
  }

  /**
   * A place to verify one guess, or null when the client is blocked. Waits while the failures in the window and
   * the guesses in flight already fill `failuresBeforeBlock` (one of those in flight will finish and wake us).
   */
  async reserve(client: string): Promise<GuessSlot | null> {
    for (;;) {
      const e = this.entry(client);
      if (e.blockedUntil > this.now()) return null;
      this.prune(e);
      if (e.failures.length + e.inFlight < this.opts.failuresBeforeBlock) {
        e.inFlight++;
        return this.slot(e);
      }
      await new Promise<void>((wake) => e.waiting.push(wake));
    }
  }

  /** Records one failed AUTH that needed no verification (e.g. a forbidden authorization identity). */
  recordFailure(client: string): { failures: number; blocked: boolean } {
    return this.count(this.entry(client));
  }

  private slot(e: Entry): GuessSlot {
    let settled = false;
    const settle = <T>(outcome: () => T): T => {
      if (settled) throw new Error("a guess slot is settled once");
      settled = true;
      e.inFlight--;
      const result = outcome();
      for (const wake of e.waiting.splice(0)) wake();
      return result;
    };
    return {
      release: () => settle(() => undefined),
      fail: () => settle(() => this.count(e)),
    };
  }

  private count(e: Entry): { failures: number; blocked: boolean } {
    const now = this.now();
    if (e.blockedUntil > now) return { failures: e.failures.length, blocked: true };
    this.prune(e);
    e.failures.push(now);
    const failures = e.failures.length;
    if (failures >= this.opts.failuresBeforeBlock) {
      e.blockedUntil = now + this.opts.blockMs;
      e.failures = [];
    }
    return { failures, blocked: e.blockedUntil > now };
  }

  private entry(client: string): Entry {
    let e = this.entries.get(client);
    if (!e) {
      if (this.entries.size >= this.sweepAt) this.sweep(this.now());
      e = { failures: [], inFlight: 0, blockedUntil: 0, waiting: [] };
      this.entries.set(client, e);
    }
    return e;
  }

  private prune(e: Entry): void {
    const since = this.now() - this.opts.blockMs;
    if (e.failures.length > 0 && e.failures[0]! <= since) e.failures = e.failures.filter((t) => t > since);
  }

  private sweep(now: number): void {
    for (const [client, e] of this.entries) {
      const idle = e.inFlight === 0 && e.waiting.length === 0;
      if (idle && e.blockedUntil <= now && e.failures.every((t) => t <= now - this.opts.blockMs)) this.entries.delete(client);
    }
    this.sweepAt = Math.max(SWEEP_AT, this.entries.size * 2);
  }

  /** Clients remembered now (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }
}

/** Why a connection was not admitted. */
export type ConnectionRefusal = "max_connections" | "max_connections_per_ip";

/** Open connections per client and in total, for smtp.max_connections_per_ip and smtp.max_connections. */
export class ConnectionCounter {
  private open = new Map<string, number>();
  private total = 0;
  constructor(
    private maxPerClient: number,
    private maxTotal = Infinity,
  ) {}

  /** Counts a new connection; the limit it would pass (and nothing counted) when it may not open. */
  tryOpen(client: string): ConnectionRefusal | null {
    if (this.total >= this.maxTotal) return "max_connections";
    const n = this.open.get(client) ?? 0;
    if (n >= this.maxPerClient) return "max_connections_per_ip";
    this.open.set(client, n + 1);
    this.total++;
    return null;
  }

  close(client: string): void {
    const n = this.open.get(client);
    if (n === undefined) return;
    if (n > 1) this.open.set(client, n - 1);
    else this.open.delete(client);
    this.total--;
  }

  count(client: string): number {
    return this.open.get(client) ?? 0;
  }

  /** open connections from every client together */
  get size(): number {
    return this.total;
  }
}
