import { describe, expect, test } from "bun:test";
import { JobLanes } from "./lanes.ts";

interface J {
  name: string;
  retry: boolean;
  claimedAt: number;
}

const fresh = (name: string, claimedAt = 0): J => ({ name, retry: false, claimedAt });
const retry = (name: string, claimedAt = 0): J => ({ name, retry: true, claimedAt });

function drain(lanes: JobLanes<J>): string[] {
  const out: string[] = [];
  for (let j = lanes.shift(); j; j = lanes.shift()) out.push(j.name);
  return out;
}

describe("JobLanes", () => {
  test("retries and first attempts take turns while both wait, each lane in its own order", () => {
    const lanes = new JobLanes<J>();
    for (const n of ["n1", "n2", "n3", "n4"]) lanes.push(fresh(n));
    lanes.push(retry("r1"));
    lanes.push(retry("r2"));
    expect(drain(lanes)).toEqual(["r1", "n1", "r2", "n2", "n3", "n4"]);
  });

  test("a retry that comes in behind a long line of new mail is the next one taken", () => {
    const lanes = new JobLanes<J>();
    for (let i = 0; i < 100; i++) lanes.push(fresh(`n${i}`));
    expect(lanes.shift()!.name).toBe("n0");
    expect(lanes.shift()!.name).toBe("n1");
    lanes.push(retry("r"));
    expect(lanes.shift()!.name).toBe("r");
    expect(lanes.waiting("fresh")).toBe(98);
  });

  test("a job put back goes to the head of its own lane", () => {
    const lanes = new JobLanes<J>();
    lanes.push(fresh("n1"));
    lanes.push(fresh("n2"));
    const n1 = lanes.shift()!;
    lanes.unshift(n1);
    expect(drain(lanes)).toEqual(["n1", "n2"]);
  });

  test("jobs claimed before a time come out of both lanes; the rest stay in order", () => {
    const lanes = new JobLanes<J>();
    lanes.push(fresh("old-n", 1));
    lanes.push(retry("old-r", 1));
    lanes.push(fresh("new-n", 5));
    lanes.push(retry("new-r", 5));
    expect(lanes.takeClaimedBefore(5).map((j) => j.name)).toEqual(["old-r", "old-n"]);
    expect(lanes.length).toBe(2);
    expect(drain(lanes)).toEqual(["new-r", "new-n"]);
    expect(lanes.takeAll()).toEqual([]);
  });
});
