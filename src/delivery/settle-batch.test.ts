/** Group commit of settles: one transaction for the settles of one window, failures kept to their own settle. */
import { describe, expect, test } from "bun:test";
import { silentLogger } from "../observe/log.ts";
import { SettleBatcher } from "./settle-batch.ts";

/** A `batch` that counts its transactions and can be told to fail the commit. */
function fakeBatch() {
  const t = { commits: 0, failCommit: false, batch: (fn: () => void) => {
    fn();
    if (t.failCommit) throw new Error("disk full");
    t.commits++;
  } };
  return t;
}

describe("settle batcher", () => {
  test("settles started together share one transaction, each getting its own result", async () => {
    const t = fakeBatch();
    const b = new SettleBatcher(t.batch, silentLogger);
    const results = await Promise.all([1, 2, 3].map((n) => b.run(() => n * 10)));
    expect(results).toEqual([10, 20, 30]);
    expect(t.commits).toBe(1);
  });

  test("a settle that throws rejects alone; the others in its transaction still resolve", async () => {
    const t = fakeBatch();
    const b = new SettleBatcher(t.batch, silentLogger);
    const ok = b.run(() => "ok");
    const bad = b.run(() => {
      throw new Error("boom");
    });
    expect(await ok).toBe("ok");
    await expect(bad).rejects.toThrow("boom");
    expect(t.commits).toBe(1);
  });

  test("a failed commit rejects every settle in it", async () => {
    const t = fakeBatch();
    t.failCommit = true;
    const b = new SettleBatcher(t.batch, silentLogger);
    const all = [b.run(() => 1), b.run(() => 2)];
    const settled = await Promise.allSettled(all);
    expect(settled.map((s) => (s.status === "rejected" ? String(s.reason) : "resolved"))).toEqual([
      "Error: settle not committed", "Error: settle not committed",
    ]);
    expect(t.commits).toBe(0);
  });

  test("flush commits at once, without waiting for the window", () => {
    const t = fakeBatch();
    const b = new SettleBatcher(t.batch, silentLogger);
    void b.run(() => 1);
    expect(t.commits).toBe(0);
    b.flush();
    expect(t.commits).toBe(1);
  });

  test("without a batch function every settle runs on its own", async () => {
    const b = new SettleBatcher(undefined, silentLogger);
    expect(await b.run(() => 7)).toBe(7);
  });
});
