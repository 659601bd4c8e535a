/**
 * @module api/rate — per-key token buckets for `[http] rate`: a key may spend `count` requests at once and
 * earns them back at count/per. An empty bucket answers how long until the next token (→ 429 Retry-After).
 */
import type { Rate } from "../config/schema.ts";
import { fullBucket, isRefilled, takeToken, type TokenBucket } from "../mail/token-bucket.ts";

/** How many keys we remember before forgetting the full buckets (they behave like new ones anyway). */
const REAP_AT = 10_000;

export class RateLimiter {
  private buckets = new Map<string, TokenBucket>();
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
      if (this.buckets.size >= REAP_AT) this.reap(now);
      b = fullBucket(this.rate.count, now);
      this.buckets.set(key, b);
    }
    return takeToken(b, this.rate.count, this.perMsRate, now);
  }

  private reap(now: number): void {
    for (const [k, b] of this.buckets) {
      if (isRefilled(b, this.rate.count, this.perMsRate, now)) this.buckets.delete(k);
    }
  }
}
