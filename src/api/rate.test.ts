import { describe, expect, test } from "bun:test";
import { RateLimiter } from "./rate.ts";

describe("RateLimiter", () => {
  test("allows a full bucket at once, then says how long until the next token", () => {
    let now = 0;
    const r = new RateLimiter({ count: 3, perMs: 3000 }, () => now);
    expect([r.take("k"), r.take("k"), r.take("k")]).toEqual([0, 0, 0]);
    expect(r.take("k")).toBe(1000);
    now = 500;
    expect(r.take("k")).toBe(500);
    now = 1000;
    expect(r.take("k")).toBe(0);
  });

  test("keeps one bucket per key", () => {
    const r = new RateLimiter({ count: 1, perMs: 60_000 }, () => 0);
    expect(r.take("a")).toBe(0);
    expect(r.take("a")).toBeGreaterThan(0);
    expect(r.take("b")).toBe(0);
  });

  test("never holds more than a full bucket after a long pause", () => {
    let now = 0;
    const r = new RateLimiter({ count: 2, perMs: 1000 }, () => now);
    r.take("k");
    now = 1_000_000;
    expect([r.take("k"), r.take("k")]).toEqual([0, 0]);
    expect(r.take("k")).toBeGreaterThan(0);
  });

  test("forgets refilled buckets once it tracks many keys, and they behave as new", () => {
    let now = 0;
    const r = new RateLimiter({ count: 1, perMs: 10 }, () => now);
    for (let i = 0; i < 10_000; i++) r.take(`k${i}`);
    now = 100;
    expect(r.take("fresh")).toBe(0);
    expect(r.take("k1")).toBe(0);
  });
});
