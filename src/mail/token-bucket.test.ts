import { expect, test } from "bun:test";
import { fullBucket, isRefilled, takeToken } from "./token-bucket.ts";

test("a full bucket gives its capacity at once, then one token per 1/perMs ms, never more than it holds", () => {
  const b = fullBucket(3, 0);
  expect([takeToken(b, 3, 0.01, 0), takeToken(b, 3, 0.01, 0), takeToken(b, 3, 0.01, 0)]).toEqual([0, 0, 0]);
  expect(takeToken(b, 3, 0.01, 0)).toBe(100);
  expect(takeToken(b, 3, 0.01, 40)).toBe(60);
  expect(takeToken(b, 3, 0.01, 100)).toBe(0);
  // a long pause refills to capacity, not beyond
  expect(isRefilled(b, 3, 0.01, 400)).toBe(true);
  for (let i = 0; i < 3; i++) expect(takeToken(b, 3, 0.01, 10_000)).toBe(0);
  expect(takeToken(b, 3, 0.01, 10_000)).toBeGreaterThan(0);
});
