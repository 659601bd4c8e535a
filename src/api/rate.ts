/**
 * @module api/rate — per-key token buckets for `[http] rate`: a key may spend `count` requests at once and
 * earns them back at count/per. An empty bucket answers how long until the next token (→ 429 Retry-After).
 */
import type { Rate } from "../config/schema.ts";

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private buckets = new Map<string, Bucket>();
  private perMsRate: number;

  constructor(
    private rate: Rate,
    private now: () => number = () => performance.now(),
  ) {
    this.perMsRate = rate.count / rate.perMs;
  }

  /** Takes one token for `key`: 0 when allowed, else the milliseconds until one is available. */
  take(key: string): number {
    const now = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= 10_000) this.reap(now);
      b = { tokens: this.rate.count, at: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.rate.count, b.tokens + (now - b.at) * this.perMsRate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.perMsRate);
  }

  /** Forgets buckets that have refilled: they behave exactly like new ones. */
  private reap(now: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + (now - b.at) * this.perMsRate >= this.rate.count) this.buckets.delete(k);
    }
  }
}
