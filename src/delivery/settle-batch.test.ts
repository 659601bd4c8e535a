/** Group commit of settles: one transaction for the settles of one window, failures kept to their own settle. */
import { describe, expect, test } from "bun:test";
import { silentLogger } from "../observe/log.ts";
import { SettleBatcher } from "./settle-batch.ts";

/** A `batch` that counts its transactions, notes the order of events, and can be told to fail the commit. */
function fakeBatch() {
  const t = {
    commits: 0,
    failCommit: false,
    seen: [] as string[],
    batch: (fn: () => void) => {
      fn();
      if (t.failCommit) throw new Error("disk full");
      t.commits++;
      t.seen.push("commit");
    },
    /** a settle that notes when it ran and when its after-commit part ran */
    settle: (name: string) => () => {
      t.seen.push(`settle ${name}`);
      return () => void t.seen.push(`after ${name}`);
    },
  };
  return t;
}

describe("settle batcher", () => {
  test("settles started together share one transaction; their after-commit parts run only after it", async () => {
    const t = fakeBatch();
    const b = new SettleBatcher(t.batch, silentLogger);
    await Promise.all(["a", "b", "c"].map((n) => b.run(t.settle(n))));
    expect(t.commits).toBe(1);
    expect(t.seen).toEqual(["settle a", "settle b", "settle c", "commit", "after a", "after b", "after c"]);
  });

  test("a settle that throws rejects alone; the others in its transaction still resolve", async () => {
    const t = fakeBatch();
    const b = new SettleBatcher(t.batch, silentLogger);
    const ok = b.run(t.settle("ok"));
    const bad = b.run(() => {
      throw new Error("boom");
    });
    await ok;
    await expect(bad).rejects.toThrow("boom");
    expect(t.commits).toBe(1);
    expect(t.seen).toEqual(["settle ok", "commit", "after ok"]);
  });

  test("a failed commit rejects every settle in it, and none of them reports anything", async () => {
    const t = fakeBatch();
    t.failCommit = true;
    const b = new SettleBatcher(t.batch, silentLogger);
    const all = [b.run(t.settle("a")), b.run(t.settle("b"))];
    const settled = await Promise.allSettled(all);
    expect(settled.map((s) => (s.status === "rejected" ? String(s.reason) : "resolved"))).toEqual([
      "Error: settle not committed", "Error: settle not committed",
    ]);
    expect(t.commits).toBe(0);
    expect(t.seen).toEqual(["settle a", "settle b"]);
  });

  test("flush commits at once, without waiting for the window", () => {
    const t = fakeBatch();
    const b = new SettleBatcher(t.batch, silentLogger);
    void b.run(t.settle("a"));
    expect(t.commits).toBe(0);
    b.flush();
    expect(t.commits).toBe(1);
  });

  test("without a batch function every settle runs on its own, then its after-commit part", async () => {
    const t = fakeBatch();
    const b = new SettleBatcher(undefined, silentLogger);
    await b.run(t.settle("a"));
    expect(t.seen).toEqual(["settle a", "after a"]);
  });
});
