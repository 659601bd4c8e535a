/**
 * @module mail/token-bucket — the one token bucket (API keys' `http.rate`, delivery's per-destination rate):
 * it holds at most `capacity` tokens and earns them back at `perMs` tokens a millisecond. Pure: callers pass
 * the time, and keep the bucket in their own state.
 */

export interface TokenBucket {
  tokens: number;
  /** when `tokens` was last brought up to date (ms, the caller's clock) */
  at: number;
}

/** A full bucket. */
export function fullBucket(capacity: number, now: number): TokenBucket {
  return { tokens: capacity, at: now };
}

/** Refills `b` to `now`, then takes one token: 0 when taken, else the milliseconds until one is there. */
export function takeToken(b: TokenBucket, capacity: number, perMs: number, now: number): number {
  refill(b, capacity, perMs, now);
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return Math.ceil((1 - b.tokens) / perMs);
}

/** True when the bucket would be full by `now`: it then behaves exactly like a new one, and can be forgotten. */
export function isRefilled(b: TokenBucket, capacity: number, perMs: number, now: number): boolean {
  return b.tokens + (now - b.at) * perMs >= capacity;
}

function refill(b: TokenBucket, capacity: number, perMs: number, now: number): void {
  b.tokens = Math.min(capacity, b.tokens + (now - b.at) * perMs);
  b.at = now;
}
