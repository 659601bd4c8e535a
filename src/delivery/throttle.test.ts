import { describe, expect, test } from "bun:test";
import { parseConfig } from "../config/load.ts";
import { Metrics } from "../observe/metrics.ts";
import { isWait, limitsFor, Throttle, throttleGauges, type DestinationLimits, type Lease, type ThrottleOptions } from "./throttle.ts";

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function setup(opts: Partial<ThrottleOptions> = {}) {
  const c = clock();
  const th = new Throttle({ concurrency: 100, backoffMs: 1_000, rateQuietMs: 10_000, deadAfter: 3, deadMs: 5_000, ...opts }, c.now);
  return { c, th };
}

const five = { maxConnections: 5, rate: null };

function acquireAll(th: Throttle, key: string, limits: DestinationLimits = five, max = 1000): Lease[] {
  const out: Lease[] = [];
  for (let i = 0; i < max; i++) {
    const r = th.tryAcquire(key, limits);
    if (isWait(r)) break;
    out.push(r);
  }
  return out;
}

function limitOf(th: Throttle, key: string): number | undefined {
  return th.snapshot().destinations.find((d) => d.key === key)?.limit;
}

describe("throttle", () => {
  test("never hands out more leases than the destination's limit", () => {
    const { th } = setup();
    const leases = acquireAll(th, "mx.a");
    expect(leases.length).toBe(5);
    const w = th.tryAcquire("mx.a", five);
    expect(isWait(w) && w.reason).toBe("concurrency");
    th.release(leases[0]!, "ok");
    expect(isWait(th.tryAcquire("mx.a", five))).toBe(false);
    expect(isWait(th.tryAcquire("mx.a", five))).toBe(true);
  });

  test("never exceeds the global concurrency across destinations", () => {
    const { th } = setup({ concurrency: 7 });
    const a = acquireAll(th, "mx.a");
    const b = acquireAll(th, "mx.b");
    expect(a.length + b.length).toBe(7);
    const w = th.tryAcquire("mx.c", five);
    expect(isWait(w) && w.reason).toBe("global");
    th.release(a[0]!);
    expect(isWait(th.tryAcquire("mx.c", five))).toBe(false);
  });

  test("halves the window on a throttle signal and backs off for a while", () => {
    const { c, th } = setup();
    const leases = acquireAll(th, "mx.a", { maxConnections: 8, rate: null });
    expect(leases.length).toBe(8);
    th.feedback(leases[0]!, "throttle");
    expect(limitOf(th, "mx.a")).toBe(4);
    // a burst of 421s from connections opened together is one signal
    th.feedback(leases[1]!, "throttle");
    th.feedback(leases[2]!, "throttle");
    expect(limitOf(th, "mx.a")).toBe(4);
    for (const l of leases) th.release(l);
    const w = th.tryAcquire("mx.a", { maxConnections: 8, rate: null });
    expect(isWait(w) && w.reason).toBe("backoff");
    c.advance(1_001);
    expect(acquireAll(th, "mx.a", { maxConnections: 8, rate: null }).length).toBe(4);
  });

  test("a second throttle after the back-off cuts again, never below one", () => {
    const { c, th } = setup();
    const l = th.tryAcquire("mx.a", five) as Lease;
    for (let i = 0; i < 5; i++) {
      th.feedback(l, "throttle");
      c.advance(1_001);
    }
    expect(limitOf(th, "mx.a")).toBe(1);
  });

  test("grows the window by one after a whole cohort of successes, up to the configured maximum", () => {
    const { c, th } = setup();
    const l = th.tryAcquire("mx.a", five) as Lease;
    th.feedback(l, "throttle"); // 5 → 2
    c.advance(1_001);
    expect(limitOf(th, "mx.a")).toBe(2);
    th.feedback(l, "ok");
    expect(limitOf(th, "mx.a")).toBe(2);
    th.feedback(l, "ok");
    expect(limitOf(th, "mx.a")).toBe(3);
    for (let i = 0; i < 3; i++) th.feedback(l, "ok");
    expect(limitOf(th, "mx.a")).toBe(4);
    for (let i = 0; i < 100; i++) th.feedback(l, "ok");
    expect(limitOf(th, "mx.a")).toBe(5);
  });

  test("a token bucket holds messages to the configured rate", () => {
    const { c, th } = setup();
    const limits = { maxConnections: 5, rate: { count: 2, perMs: 1_000 } };
    const l = th.tryAcquire("mx.a", limits) as Lease;
    expect(th.admit(l)).toBe(true);
    const w = th.admit(l);
    expect(isWait(w) && w.reason).toBe("rate");
    expect(isWait(w) && w.waitUntil).toBe(c.now() + 500);
    c.advance(500);
    expect(th.admit(l)).toBe(true);
    expect(isWait(th.admit(l))).toBe(true);
    // over a long run the count admitted follows the rate
    let admitted = 0;
    for (let i = 0; i < 10_000; i++) {
      c.advance(10);
      if (th.admit(l) === true) admitted++;
    }
    expect(admitted).toBeGreaterThanOrEqual(199);
    expect(admitted).toBeLessThanOrEqual(202);
  });

  test("a rate of one message a minute gets one connection, and none while its next token is more than connectAheadMs away", () => {
    const { c, th } = setup({ connectAheadMs: 2_000 });
    const limits = { maxConnections: 5, rate: { count: 1, perMs: 60_000 } };
    const l = th.tryAcquire("mx.a", limits) as Lease;
    const second = th.tryAcquire("mx.a", limits);
    expect(isWait(second) && second.reason).toBe("concurrency");
    expect(th.admit(l)).toBe(true);
    th.release(l, "ok");
    const w = th.tryAcquire("mx.a", limits);
    expect(isWait(w) && w.reason).toBe("rate");
    expect(isWait(w) && w.waitUntil).toBe(c.now() + 60_000);
    c.advance(58_000);
    // two seconds before the token: a connection may open, to be ready for it
    const ready = th.tryAcquire("mx.a", limits);
    expect(isWait(ready)).toBe(false);
    expect(th.admit(ready as Lease)).toEqual({ waitUntil: c.now() + 2_000, reason: "rate" });
  });

  test("a rate of several messages within connectAheadMs keeps the whole concurrency window", () => {
    const { th } = setup({ connectAheadMs: 2_000 });
    const limits: DestinationLimits = { maxConnections: 5, rate: { count: 1, perMs: 1_000 } };
    expect(acquireAll(th, "mx.a", limits).length).toBe(5);
  });

  test("no span of the rate's period admits more than count + 1: not at the start, not after a pause", () => {
    for (const rate of [{ count: 10, perMs: 1_000 }, { count: 600, perMs: 60_000 }]) {
      const { c, th } = setup();
      const limits = { maxConnections: 1, rate };
      const l = th.tryAcquire("mx.a", limits) as Lease;
      const admittedAt: number[] = [];
      const t0 = c.now();
      // eager for 3 periods, idle (connection kept) for 2, eager again for 3
      for (let t = 0; t < 8 * rate.perMs; t += 5) {
        const idle = t >= 3 * rate.perMs && t < 5 * rate.perMs;
        if (!idle) while (th.admit(l) === true) admittedAt.push(c.now() - t0);
        c.advance(5);
      }
      let most = 0;
      for (let i = 0, j = 0; i < admittedAt.length; i++) {
        while (admittedAt[i]! - admittedAt[j]! >= rate.perMs) j++;
        most = Math.max(most, i - j + 1);
      }
      expect(most).toBeLessThanOrEqual(rate.count + 1);
      expect(most).toBeGreaterThanOrEqual(rate.count); // it does send at the rate
      expect(admittedAt.filter((t) => t < rate.perMs).length).toBeLessThanOrEqual(rate.count + 1);
    }
  });

  test("a throttle signal halves the rate, which recovers only after a quiet period", () => {
    const { c, th } = setup();
    const limits = { maxConnections: 1, rate: { count: 10, perMs: 1_000 } };
    const l = th.tryAcquire("mx.a", limits) as Lease;
    th.feedback(l, "throttle");
    const rateOf = () => th.snapshot().destinations[0]!.rate!.count;
    expect(rateOf()).toBe(5);
    c.advance(2_000);
    th.feedback(l, "ok"); // cohort of 1, but not quiet yet
    expect(rateOf()).toBe(5);
    c.advance(10_000);
    th.feedback(l, "ok");
    expect(rateOf()).toBe(10);
  });

  test("declares a destination dead after consecutive failed connections and lets one probe through later", () => {
    const { c, th } = setup();
    for (let i = 0; i < 3; i++) th.release(th.tryAcquire("mx.a", five) as Lease, "failure");
    const snap = th.snapshot().destinations[0]!;
    expect(snap.dead).toBe(true);
    const w = th.tryAcquire("mx.a", five);
    expect(isWait(w) && w.reason).toBe("dead");
    expect(isWait(w) && w.waitUntil).toBe(c.now() + 5_000);
    c.advance(5_001);
    const probe = th.tryAcquire("mx.a", five) as Lease;
    expect(isWait(probe)).toBe(false);
    expect(isWait(th.tryAcquire("mx.a", five))).toBe(true); // only one probe
    th.release(probe, "failure");
    const again = th.tryAcquire("mx.a", five);
    expect(isWait(again) && again.waitUntil).toBe(c.now() + 10_000); // doubled
    c.advance(10_001);
    const probe2 = th.tryAcquire("mx.a", five) as Lease;
    th.release(probe2, "ok");
    expect(th.snapshot().destinations.find((d) => d.key === "mx.a")?.dead ?? false).toBe(false);
    expect(acquireAll(th, "mx.a").length).toBe(5);
  });

  test("connections that fail together make one dead period; only a failed probe doubles it", () => {
    const { c, th } = setup({ deadAfter: 3, deadMs: 5_000 });
    const leases = acquireAll(th, "mx.a", { maxConnections: 50, rate: null });
    expect(leases.length).toBe(50);
    for (const l of leases) th.release(l, "failure");
    const dead = th.snapshot().destinations.find((d) => d.key === "mx.a")!;
    expect(dead.deadUntil).toBe(c.now() + 5_000);
    c.advance(5_001);
    const probe = th.tryAcquire("mx.a", five) as Lease;
    th.release(probe, "failure");
    expect(th.snapshot().destinations.find((d) => d.key === "mx.a")!.deadUntil).toBe(c.now() + 10_000);
  });

  test("a failure on a connection that already delivered does not count toward death", () => {
    const { th } = setup();
    for (let i = 0; i < 5; i++) {
      const l = th.tryAcquire("mx.a", five) as Lease;
      th.feedback(l, "ok");
      th.release(l, "failure");
    }
    expect(th.snapshot().destinations.find((d) => d.key === "mx.a")?.dead ?? false).toBe(false);
  });

  test("forgets idle destinations that are back to their configured budget, rate tokens included", () => {
    const { c, th } = setup();
    const l = th.tryAcquire("mx.a", five) as Lease;
    expect(th.snapshot().destinations.length).toBe(1);
    th.release(l, "ok");
    expect(th.snapshot().destinations.length).toBe(0);
    // with a rate, an idle destination is kept until its spent tokens have come back
    const limited = { maxConnections: 1, rate: { count: 10, perMs: 60_000 } };
    const r = th.tryAcquire("mx.b", limited) as Lease;
    expect(th.admit(r)).toBe(true);
    th.release(r, "ok");
    expect(th.snapshot().destinations.map((d) => d.key)).toEqual(["mx.b"]);
    c.advance(6_000);
    expect(th.snapshot().destinations.length).toBe(0);
  });

  test("an idle moment between connections does not reset the rate", () => {
    const { c, th } = setup();
    const limited = { maxConnections: 1, rate: { count: 10, perMs: 60_000 } };
    // one message per connection, a connection after another, for a minute: at most the rate (+1, the first token)
    let admitted = 0;
    for (let t = 0; t < 60_000; t += 100) {
      const l = th.tryAcquire("mx.a", limited);
      if (!isWait(l)) {
        if (th.admit(l) === true) admitted++;
        th.release(l, "ok");
      }
      c.advance(100);
    }
    expect(admitted).toBeLessThanOrEqual(11);
    expect(admitted).toBeGreaterThanOrEqual(10);
  });

  test("exports its state as Prometheus text, with no rate sample for a destination without a rate", async () => {
    const { th } = setup();
    th.tryAcquire('mx."a"', five);
    th.tryAcquire("mx.b", { maxConnections: 5, rate: { count: 600, perMs: 60_000 } });
    const metrics = new Metrics();
    throttleGauges(metrics, () => th.snapshot());
    const text = await metrics.render();
    expect(text).toContain('outpost_destination_connections{destination="mx.\\"a\\""} 1');
    expect(text).toContain("outpost_delivery_connections 2");
    expect(text).toContain('outpost_destination_rate_per_second{destination="mx.b"} 10');
    expect(text).not.toContain('outpost_destination_rate_per_second{destination="mx.\\"a\\""}');
  });
});

describe("limitsFor", () => {
  const cfg = parseConfig(
    `
[delivery]
per_destination_connections = 5
[delivery.destination."gmail.com"]
per_destination_connections = 10
rate = "600/min"
[delivery.destination."*.protection.outlook.com"]
per_destination_connections = 3
[delivery.destination."*.outlook.com"]
per_destination_connections = 2
`,
    { file: null, baseDir: "/tmp", env: {} },
  ).delivery;

  test("uses the global budget when no destination entry matches", () => {
    expect(limitsFor(cfg, ["mx.example.net"], ["example.net"])).toEqual({ maxConnections: 5, rate: null });
  });

  test("applies an entry named after a recipient domain routed to the destination", () => {
    expect(limitsFor(cfg, ["gmail-smtp-in.l.google.com"], ["googlemail.com", "gmail.com"])).toEqual({
      maxConnections: 10,
      rate: { count: 600, perMs: 60_000 },
    });
  });

  test("applies an MX host pattern, the longest matching pattern winning", () => {
    const l = limitsFor(cfg, ["contoso-com.mail.protection.outlook.com"], ["contoso.com"]);
    expect(l.maxConnections).toBe(3);
    expect(limitsFor(cfg, ["mx.outlook.com"], ["x.org"]).maxConnections).toBe(2);
  });
});
