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
  expect(n.tryOpen("a")).toBeNull();
  expect(n.tryOpen("a")).toBeNull();
  expect(n.tryOpen("a")).toBe("max_connections_per_ip");
  expect(n.tryOpen("b")).toBeNull();
  n.close("a");
  expect(n.count("a")).toBe(1);
  expect(n.tryOpen("a")).toBeNull();
});

test("ConnectionCounter refuses any client once the total is reached, and a close frees a place for anyone", () => {
  const n = new ConnectionCounter(2, 3);
  for (const c of ["a", "b", "c"]) expect(n.tryOpen(c)).toBeNull();
  expect(n.tryOpen("d")).toBe("max_connections");
  expect(n.tryOpen("a")).toBe("max_connections");
  expect(n.size).toBe(3);
  n.close("b");
  n.close("b"); // a second close of one connection frees nothing more
  expect(n.size).toBe(2);
  expect(n.tryOpen("d")).toBeNull();
  expect(n.tryOpen("e")).toBe("max_connections");
});

test("no more guesses are verified at once than the failures the client has left; the rest wait for a place", async () => {
  const g = new AuthGuard({ failuresBeforeBlock: 3, blockMs: 60_000, now: clock().now });
  const got = Array.from({ length: 10 }, () => g.reserve("192.0.2.1"));
  const settled: Array<Awaited<ReturnType<AuthGuard["reserve"]>>> = [];
  got.forEach((p) => void p.then((s) => settled.push(s)));
  await Bun.sleep(0);
  expect(settled.length).toBe(3); // three in flight, seven waiting
  expect(settled.every((s) => s !== null)).toBe(true);
  expect((await g.reserve("192.0.2.2"))).not.toBeNull(); // another client has its own places
  // a success gives its place back: one waiting guess gets it
  settled[0]!.release();
  await Bun.sleep(0);
  expect(settled.length).toBe(4);
  // a failure keeps its place, now as a counted failure: nobody else gets one
  expect(settled[1]!.fail()).toEqual({ failures: 1, blocked: false });
  await Bun.sleep(0);
  expect(settled.length).toBe(4);
  // three failures block the client: every guess still waiting is refused, none verified
  expect(settled[2]!.fail()).toEqual({ failures: 2, blocked: false });
  expect(settled[3]!.fail()).toEqual({ failures: 3, blocked: true });
  await Promise.all(got);
  expect(settled.slice(4)).toEqual([null, null, null, null, null, null]);
  expect(g.blockedFor("192.0.2.1")).toBe(60_000);
  expect(await g.reserve("192.0.2.1")).toBeNull();
});

test("a guess still in flight when the block begins adds no failure and does not extend the block", async () => {
  const c = clock();
  const g = new AuthGuard({ failuresBeforeBlock: 3, blockMs: 1000, now: c.now });
  const slot = await g.reserve("203.0.113.5");
  g.recordFailure("203.0.113.5");
  expect(g.recordFailure("203.0.113.5")).toEqual({ failures: 2, blocked: false });
  c.advance(10);
  expect(g.recordFailure("203.0.113.5")).toEqual({ failures: 3, blocked: true });
  c.advance(10);
  expect(slot!.fail()).toEqual({ failures: 0, blocked: true });
  expect(g.blockedFor("203.0.113.5")).toBe(990);
});

test("failures in the window and guesses in flight share the limit", async () => {
  const c = clock();
  const g = new AuthGuard({ failuresBeforeBlock: 3, blockMs: 1000, now: c.now });
  g.recordFailure("198.51.100.7");
  g.recordFailure("198.51.100.7");
  const first = await g.reserve("198.51.100.7");
  let second: unknown = "waiting";
  void g.reserve("198.51.100.7").then((s) => (second = s));
  await Bun.sleep(0);
  expect(second).toBe("waiting");
  first!.release();
  await Bun.sleep(0);
  expect(second).not.toBe("waiting");
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
