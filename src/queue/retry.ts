/**
 * @module queue/retry — when to try a deferred recipient again, and when to give up (pure).
 *
 * `delivery.retry` is a list of delays; attempt N (1-based) waits `schedule[N-1]`, and the last entry repeats.
 * Each delay is spread by ±10 % jitter: a 421 storm or a restarted receiver defers thousands of recipients in
 * the same second, and without jitter they would all come due in the same second again (a thundering herd that
 * trips the receiver's limits once more). ±10 % keeps the schedule recognisable to an operator (a "5m" retry
 * happens between 4m30s and 5m30s) while spreading a burst over a window a fifth of the delay wide.
 */

export const JITTER = 0.1;

/**
 * Delay in ms before the next attempt, after `attempts` attempts have failed (1 = the first failure).
 * `random` returns [0, 1) like Math.random; tests pass a fixed one.
 */
export function nextAttemptDelay(attempts: number, schedule: readonly number[], random: () => number = Math.random): number {
  if (schedule.length === 0) throw new Error("retry schedule is empty");
  const index = Math.min(Math.max(attempts, 1), schedule.length) - 1;
  const base = schedule[index]!;
  const factor = 1 - JITTER + 2 * JITTER * clamp01(random());
  return Math.round(base * factor);
}

/** True when a message created at `createdAt` has been queued for `maxQueueTimeMs` or longer. */
export function isExpired(createdAt: number, now: number, maxQueueTimeMs: number): boolean {
  return now - createdAt >= maxQueueTimeMs;
}

/**
 * The time of the next attempt: `now + delay`, but never later than the expiry moment, so a message gets one
 * last try when its queue time runs out instead of sitting up to one full retry interval past it.
 */
export function nextAttemptAt(
  attempts: number,
  now: number,
  createdAt: number,
  schedule: readonly number[],
  maxQueueTimeMs: number,
  random: () => number = Math.random,
): number {
  const at = now + nextAttemptDelay(attempts, schedule, random);
  return Math.max(now, Math.min(at, createdAt + maxQueueTimeMs));
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 1) : 0.5;
}
