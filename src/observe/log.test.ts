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

test("errors and bigints are written readably wherever they are in the fields, and plain values as JSON has them", () => {
  const lines: string[] = [];
  const log = createLogger("info", (l) => lines.push(l));
  log.info("plain", { n: 1, s: "x", b: false, nil: null, gone: undefined, nan: Number.NaN, list: ["a", 2, null] });
  log.info("big", { id: 12345678901234567890n, list: [1n] });
  log.warn("nested", { cause: { error: new TypeError("inner") }, errors: [new Error("a")], at: new Date(0) });
  expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toMatchObject([
    { event: "plain", n: 1, s: "x", b: false, nil: null, nan: null, list: ["a", 2, null] },
    { event: "big", id: "12345678901234567890", list: ["1"] },
    { event: "nested", cause: { error: { name: "TypeError", message: "inner" } }, errors: [{ name: "Error", message: "a" }], at: "1970-01-01T00:00:00.000Z" },
  ]);
  expect("gone" in JSON.parse(lines[0]!)).toBe(false);
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

/** Runs `body` in a fresh bun process with `log` = the default (stdout) logger; the events it wrote, in order. */
async function eventsOnStdout(body: string): Promise<string[]> {
  const script = `import { createLogger } from ${JSON.stringify(`${import.meta.dir}/log.ts`)};\nconst log = createLogger("info");\n${body}`;
  const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  return out.trim().split("\n").map((l) => (JSON.parse(l) as { event: string }).event);
}

test("stdout gets every line, in order, from turn after turn of the event loop", async () => {
  expect(await eventsOnStdout(`log.info("a"); log.info("b"); setTimeout(() => { log.info("c"); setImmediate(() => log.info("d")); }, 5);`))
    .toEqual(["a", "b", "c", "d"]);
});

test("the lines logged just before process.exit or an uncaught error are not lost", async () => {
  expect(await eventsOnStdout(`log.info("a"); setTimeout(() => { log.info("b"); process.exit(3); }, 5);`)).toEqual(["a", "b"]);
  expect(await eventsOnStdout(`log.info("a"); setTimeout(() => { log.error("b"); throw new Error("boom"); }, 5);`)).toEqual(["a", "b"]);
});

test("a burst of lines longer than one write's worth arrives whole", async () => {
  const events = await eventsOnStdout(`for (let i = 0; i < 3000; i++) log.info("e" + i, { pad: "x".repeat(40) }); process.exit(0);`);
  expect(events).toEqual(Array.from({ length: 3000 }, (_, i) => `e${i}`));
});
