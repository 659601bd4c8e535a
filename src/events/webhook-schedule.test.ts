import { describe, expect, test } from "bun:test";
import { nextAttemptAt, WEBHOOK_RETRY } from "./webhook-schedule.ts";

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const T0 = 1_700_000_000_000;
const middle = () => 0.5; // no jitter

describe("nextAttemptAt", () => {
  const cases: [failures: number, failedAt: number, expected: number][] = [
    [1, T0, T0 + 10 * S],
    [2, T0 + 10 * S, T0 + 10 * S + M],
    [3, T0 + M, T0 + 6 * M],
    [4, T0 + 6 * M, T0 + 21 * M],
    [5, T0 + 21 * M, T0 + 81 * M],
    [6, T0 + 81 * M, T0 + 141 * M],
    [20, T0 + 10 * H, T0 + 11 * H],
  ];
  for (const [failures, failedAt, expected] of cases) {
    test(`after failure ${failures} at +${(failedAt - T0) / S} s the next try is at +${(expected - T0) / S} s`, () => {
      expect(nextAttemptAt(failures, T0, failedAt, middle)).toBe(expected);
    });
  }

  test("jitter moves a wait by at most a tenth either way", () => {
    expect(nextAttemptAt(5, T0, T0, () => 0)).toBe(T0 + 0.9 * H);
    expect(nextAttemptAt(5, T0, T0, () => 0.999_999)).toBeCloseTo(T0 + 1.1 * H, -2);
    expect(nextAttemptAt(1, T0, T0, () => 0)).toBe(T0 + 9 * S);
  });

  test("the last retry is held to the 24 h deadline", () => {
    expect(nextAttemptAt(25, T0, T0 + 23.5 * H, middle)).toBe(T0 + 24 * H);
  });

  test("a failure at or after the deadline gives up", () => {
    expect(nextAttemptAt(26, T0, T0 + 24 * H, middle)).toBeNull();
    expect(nextAttemptAt(1, T0, T0 + 30 * H, middle)).toBeNull();
  });

  test("the window counts from when the row's window began, not from the first failure", () => {
    expect(nextAttemptAt(1, T0 - 24 * H + 5 * S, T0, middle)).toBe(T0 + 5 * S);
  });

  test("the schedule is 10 s, 1 m, 5 m, 15 m, 1 h over 24 h", () => {
    expect(WEBHOOK_RETRY.delays).toEqual([10 * S, M, 5 * M, 15 * M, H]);
    expect(WEBHOOK_RETRY.maxAge).toBe(24 * H);
  });
});
