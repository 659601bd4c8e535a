import { expect, test } from "bun:test";
import { createLogger } from "./log.ts";
import { Metrics } from "./metrics.ts";

test("a gauge whose reading throws reads NaN (not 0) in that scrape, is logged, and the other metrics still render", async () => {
  const lines: string[] = [];
  const metrics = new Metrics(createLogger("info", (l) => lines.push(l)));
  let fail = false;
  metrics.gauge({ name: "t_depth", help: "depth", collect: (g) => {
    if (fail) throw new Error("no such table: recipients");
    g.set(3);
  } });
  metrics.counter({ name: "t_things_total", help: "things" }).inc();
  expect(await metrics.render()).toContain("t_depth 3");
  fail = true;
  const text = await metrics.render();
  // prom-client writes "Nan"; Prometheus reads any case of NaN (Go strconv.ParseFloat)
  expect(text).toMatch(/^t_depth nan$/im);
  expect(text).toContain("t_things_total 1");
  expect(JSON.parse(lines[0]!)).toMatchObject({ event: "metrics_collect_failed", metric: "t_depth", error: { message: "no such table: recipients" } });
});

test("a name declared again is the same metric; as another kind, an error", async () => {
  const metrics = new Metrics();
  const a = metrics.counter({ name: "t_final_total", help: "final", labelNames: ["status"], initial: [{ status: "delivered" }] });
  const b = metrics.counter({ name: "t_final_total", help: "final", labelNames: ["status"] });
  b.inc({ status: "delivered" }, 2);
  expect(a).toBe(b);
  expect(await metrics.render()).toContain('t_final_total{status="delivered"} 2');
  expect(() => metrics.gauge({ name: "t_final_total", help: "x" })).toThrow(/different kinds/);
});

test("two registries count apart (one per runtime, never the global one)", async () => {
  const one = new Metrics();
  const two = new Metrics();
  one.counter({ name: "t_x_total", help: "x" }).inc(5);
  two.counter({ name: "t_x_total", help: "x" });
  expect(await two.render()).toContain("t_x_total 0");
  expect(await one.render()).toContain("t_x_total 5");
});

test("a labelled gauge whose reading throws has no sample at all in that scrape", async () => {
  const metrics = new Metrics();
  let fail = false;
  metrics.gauge({ name: "t_by_status", help: "x", labelNames: ["status"], collect: (g) => {
    if (fail) throw new Error("x");
    g.set({ status: "queued" }, 1);
  } });
  expect(await metrics.render()).toContain('t_by_status{status="queued"} 1');
  fail = true;
  expect(await metrics.render()).not.toMatch(/^t_by_status/m);
});
