import { expect, test } from "bun:test";
import { AuthGuard, ConnectionCounter } from "./auth-guard.ts";

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test("blocks an IP for blockMs once it reaches the failure count, and only that IP", () => {
  const c = clock();
  const g = new AuthGuard({ failuresBeforeBlock: 3, blockMs: 60_000, now: c.now });
  expect(g.recordFailure("192.0.2.1")).toEqual({ failures: 1, blocked: false });
  expect(g.recordFailure("192.0.2.1")).toEqual({ failures: 2, blocked: false });
  expect(g.blockedFor("192.0.2.1")).toBe(0);
  expect(g.recordFailure("192.0.2.1")).toEqual({ failures: 3, blocked: true });
  expect(g.blockedFor("192.0.2.1")).toBe(60_000);
  expect(g.blockedFor("192.0.2.2")).toBe(0);
  c.advance(59_999);
  expect(g.blockedFor("192.0.2.1")).toBe(1);
  c.advance(1);
  expect(g.blockedFor("192.0.2.1")).toBe(0);
});

test("forgets failures older than the window", () => {
  const c = clock();
  const g = new AuthGuard({ failuresBeforeBlock: 2, blockMs: 1000, now: c.now });
  g.recordFailure("198.51.100.7");
  c.advance(1001);
  expect(g.recordFailure("198.51.100.7")).toEqual({ failures: 1, blocked: false });
});

test("after a block runs out, the count starts again from zero", () => {
  const c = clock();
  const g = new AuthGuard({ failuresBeforeBlock: 2, blockMs: 1000, now: c.now });
  g.recordFailure("::1");
  g.recordFailure("::1");
  c.advance(1000);
  expect(g.recordFailure("::1")).toEqual({ failures: 1, blocked: false });
});

test("ConnectionCounter refuses the connection over the limit and frees a slot on close", () => {
  const n = new ConnectionCounter(2);
  expect(n.tryOpen("a")).toBe(true);
  expect(n.tryOpen("a")).toBe(true);
  expect(n.tryOpen("a")).toBe(false);
  expect(n.tryOpen("b")).toBe(true);
  n.close("a");
  expect(n.count("a")).toBe(1);
  expect(n.tryOpen("a")).toBe(true);
});

test("a spray of IPs is swept once stale, and live ones are kept (memory bounded by the window, not by history)", () => {
  const c = clock();
  const g = new AuthGuard({ failuresBeforeBlock: 5, blockMs: 1000, now: c.now });
  const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  for (let i = 0; i < 10_000; i++) g.recordFailure(ip(i));
  expect(g.size).toBe(10_000);
  // all of those are live: the next failure cannot free them, and a blocked IP must stay blocked
  for (let i = 0; i < 5; i++) g.recordFailure("192.0.2.9");
  expect(g.blockedFor("192.0.2.9")).toBe(1000);
  expect(g.size).toBe(10_001);
  c.advance(1001);
  // past the window everything above is stale; growing to the next threshold sweeps them
  for (let i = 10_000; i < 30_010; i++) g.recordFailure(ip(i));
  expect(g.size).toBeLessThan(20_020);
  expect(g.blockedFor("192.0.2.9")).toBe(0);
});
