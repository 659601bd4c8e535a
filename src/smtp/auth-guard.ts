/**
 * @module smtp/auth-guard — counts failed AUTH per client IP; after `failuresBeforeBlock` failures
 * within `blockMs`, the IP is refused (421 4.7.0) for `blockMs`. smtp-server counts nothing itself.
 *
 * Successes do not reset the count: one known password must not buy unlimited guesses at others.
 */

export interface AuthGuardOptions {
  failuresBeforeBlock: number;
  blockMs: number;
  now?: () => number;
}

interface Entry {
  /** times of the failures still inside the window, oldest first */
  failures: number[];
  blockedUntil: number;
}

/** How many IPs we remember before sweeping out the stale ones (bounds memory under a spray of IPs). */
const SWEEP_AT = 10_000;

export class AuthGuard {
  private entries = new Map<string, Entry>();
  private now: () => number;
  /** size that triggers the next sweep; doubles when a sweep frees little, so a spray of live IPs costs O(1) amortised */
  private sweepAt = SWEEP_AT;

  constructor(private opts: AuthGuardOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds this IP is still blocked for, 0 when it is not. */
  blockedFor(ip: string): number {
    const e = this.entries.get(ip);
    return e ? Math.max(0, e.blockedUntil - this.now()) : 0;
  }

  /** Records one failed AUTH; returns the failures counted in the window and whether the IP is now blocked. */
  recordFailure(ip: string): { failures: number; blocked: boolean } {
    const now = this.now();
    if (this.entries.size >= this.sweepAt) this.sweep(now);
    const e = this.entries.get(ip) ?? { failures: [], blockedUntil: 0 };
    this.entries.set(ip, e);
    e.failures = e.failures.filter((t) => t > now - this.opts.blockMs);
    e.failures.push(now);
    const failures = e.failures.length;
    if (failures >= this.opts.failuresBeforeBlock) {
      e.blockedUntil = now + this.opts.blockMs;
      e.failures = [];
    }
    return { failures, blocked: e.blockedUntil > now };
  }

  private sweep(now: number): void {
    for (const [ip, e] of this.entries) {
      if (e.blockedUntil <= now && e.failures.every((t) => t <= now - this.opts.blockMs)) this.entries.delete(ip);
    }
    this.sweepAt = Math.max(SWEEP_AT, this.entries.size * 2);
  }

  /** IPs remembered now (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }
}

/** Open connections per client IP, for smtp.max_connections_per_ip. */
export class ConnectionCounter {
  private open = new Map<string, number>();
  constructor(private max: number) {}

  /** Counts a new connection; false (and nothing counted) when the IP is already at the limit. */
  tryOpen(ip: string): boolean {
    const n = this.open.get(ip) ?? 0;
    if (n >= this.max) return false;
    this.open.set(ip, n + 1);
    return true;
  }

  close(ip: string): void {
    const n = (this.open.get(ip) ?? 0) - 1;
    if (n > 0) this.open.set(ip, n);
    else this.open.delete(ip);
  }

  count(ip: string): number {
    return this.open.get(ip) ?? 0;
  }
}
