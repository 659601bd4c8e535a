import { describe, expect, test } from "bun:test";
import { isExpired, JITTER, nextAttemptAt, nextAttemptDelay } from "./retry.ts";

const MIN = 60_000;
const SCHEDULE = [1 * MIN, 5 * MIN, 15 * MIN];
const middle = () => 0.5;

describe("retry schedule", () => {
  test("the first failure waits the first delay, the second the second", () => {
    expect(nextAttemptDelay(1, SCHEDULE, middle)).toBe(1 * MIN);
    expect(nextAttemptDelay(2, SCHEDULE, middle)).toBe(5 * MIN);
    expect(nextAttemptDelay(3, SCHEDULE, middle)).toBe(15 * MIN);
  });

  test("the last delay repeats for every later failure", () => {
    expect(nextAttemptDelay(4, SCHEDULE, middle)).toBe(15 * MIN);
    expect(nextAttemptDelay(400, SCHEDULE, middle)).toBe(15 * MIN);
  });

  test("zero attempts is treated like the first failure", () => {
    expect(nextAttemptDelay(0, SCHEDULE, middle)).toBe(1 * MIN);
  });

  test("an empty schedule is a programming error", () => {
    expect(() => nextAttemptDelay(1, [], middle)).toThrow();
  });
});

describe("retry jitter", () => {
  test("stays within ten percent either side of the scheduled delay", () => {
    expect(JITTER).toBe(0.1);
    expect(nextAttemptDelay(2, SCHEDULE, () => 0)).toBe(4.5 * MIN);
    expect(nextAttemptDelay(2, SCHEDULE, () => 0.999999)).toBeLessThanOrEqual(5.5 * MIN);
    expect(nextAttemptDelay(2, SCHEDULE, () => 0.999999)).toBeGreaterThan(5.49 * MIN);
  });

  test("spreads a burst of deferrals over the whole window", () => {
    let seed = 42;
    const lcg = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const delays = Array.from({ length: 1000 }, () => nextAttemptDelay(1, SCHEDULE, lcg));
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(0.9 * MIN);
      expect(d).toBeLessThanOrEqual(1.1 * MIN);
    }
    expect(Math.min(...delays)).toBeLessThan(0.92 * MIN);
    expect(Math.max(...delays)).toBeGreaterThan(1.08 * MIN);
  });

  test("a random source out of range is clamped rather than trusted", () => {
    expect(nextAttemptDelay(1, SCHEDULE, () => 7)).toBe(1.1 * MIN);
    expect(nextAttemptDelay(1, SCHEDULE, () => Number.NaN)).toBe(1 * MIN);
  });
});

describe("queue expiry", () => {
  const DAY = 86_400_000;
  test("a message is not expired one millisecond before max_queue_time", () => {
    expect(isExpired(0, 5 * DAY - 1, 5 * DAY)).toBe(false);
  });

  test("a message is expired at max_queue_time and after", () => {
    expect(isExpired(0, 5 * DAY, 5 * DAY)).toBe(true);
    expect(isExpired(0, 6 * DAY, 5 * DAY)).toBe(true);
  });

  test("the next attempt is never later than the expiry moment, so the last try happens on time", () => {
    const created = 0;
    const now = 5 * DAY - 10 * MIN;
    expect(nextAttemptAt(9, now, created, [8 * 60 * MIN], 5 * DAY, middle)).toBe(5 * DAY);
    expect(nextAttemptAt(1, now, created, [1 * MIN], 5 * DAY, middle)).toBe(now + 1 * MIN);
  });

  test("the next attempt is never in the past, even for an already expired message", () => {
    expect(nextAttemptAt(1, 10 * DAY, 0, [1 * MIN], 5 * DAY, middle)).toBe(10 * DAY);
  });
});
