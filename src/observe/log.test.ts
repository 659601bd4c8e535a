import { expect, test } from "bun:test";
import { createLogger } from "./log.ts";

test("writes one JSON line per event with time, level and event name, dropping levels below the threshold", () => {
  const lines: string[] = [];
  const log = createLogger("info", (l) => lines.push(l));
  log.debug("hidden");
  log.info("smtp_transaction", { queue_id: "abc", size: 10 });
  log.error("failed", { error: new Error("boom") });
  expect(lines.length).toBe(2);
  const first = JSON.parse(lines[0]!);
  expect(first).toMatchObject({ level: "info", event: "smtp_transaction", queue_id: "abc", size: 10 });
  expect(Date.parse(first.time)).not.toBeNaN();
  expect(JSON.parse(lines[1]!).error).toEqual({ name: "Error", message: "boom" });
});

test("OUTPOST_LOG sets the level when none is given", () => {
  const saved = process.env.OUTPOST_LOG;
  process.env.OUTPOST_LOG = "debug";
  try {
    const lines: string[] = [];
    createLogger(undefined, (l) => lines.push(l)).debug("visible");
    expect(lines.length).toBe(1);
  } finally {
    if (saved === undefined) delete process.env.OUTPOST_LOG;
    else process.env.OUTPOST_LOG = saved;
  }
});
