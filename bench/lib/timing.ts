/** @module bench/lib/timing — a bench's numeric options, and rates measured in timed rounds (per CPU second and per wall second, median). */

/** `--name N` from the command line, or `dflt`. */
export function numberOption(name: string, dflt: number, args = process.argv.slice(2)): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : dflt;
}

/** The middle value (the upper one of an even count). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

export interface Rates {
  /** median operations per CPU second (user + system) of this process: one core's worth, whatever else the machine runs */
  cpu: number;
  /** median operations per wall-clock second: only the share of the machine we got */
  wall: number;
  /** each round's, in order */
  rounds: { count: number; cpu: number; wall: number }[];
}

/**
 * Calls `batch` (which does `perBatch` operations) again and again for `seconds`, `rounds` times; warm up before
 * calling this. Rates count operations, so a batch of 20 calls says 20.
 */
export async function measure(batch: () => unknown, perBatch: number, seconds: number, rounds: number): Promise<Rates> {
  const each: Rates["rounds"] = [];
  for (let r = 0; r < rounds; r++) {
    let count = 0;
    const start = performance.now();
    const cpu0 = process.cpuUsage();
    while (performance.now() - start < seconds * 1000) {
      await batch();
      count += perBatch;
    }
    const cpu = process.cpuUsage(cpu0);
    each.push({ count, cpu: count / ((cpu.user + cpu.system) / 1e6), wall: count / ((performance.now() - start) / 1000) });
  }
  return { cpu: median(each.map((r) => r.cpu)), wall: median(each.map((r) => r.wall)), rounds: each };
}
