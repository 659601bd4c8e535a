/** @module events/webhook-schedule — when a failed webhook POST is tried again, and when it gives up (pure). */

export interface RetryPolicy {
  /** ms to wait after the 1st, 2nd, … failure; the last one repeats */
  delays: readonly number[];
  /** ms after the row's window began (the event's recording) when it gives up */
  maxAge: number;
  /** each wait is scaled by a factor drawn from [1 − jitter, 1 + jitter) */
  jitter: number;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/** About 10 s, 1 m, 5 m, 15 m, 1 h, then hourly, for 24 h. */
export const WEBHOOK_RETRY: RetryPolicy = {
  delays: [10 * SECOND, MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR],
  maxAge: 24 * HOUR,
  jitter: 0.1,
};

/**
 * After `failures` failed attempts (the last one ending at `now`), the time of the next attempt, or null when the
 * row's 24 h are over. The jitter spreads the retries of a burst of events that failed together (a receiver that
 * was down) instead of sending them back all at once. The last retry is held to the deadline itself, so a receiver
 * that comes back in the last hour still gets the event.
 */
export function nextAttemptAt(failures: number, startedAt: number, now: number, random: () => number, policy = WEBHOOK_RETRY): number | null {
  const deadline = startedAt + policy.maxAge;
  if (now >= deadline) return null;
  const delays = policy.delays;
  const base = delays[Math.min(Math.max(failures, 1), delays.length) - 1]!;
  const wait = Math.round(base * (1 + policy.jitter * (2 * random() - 1)));
  return Math.min(now + wait, deadline);
}
