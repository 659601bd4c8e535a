/**
 * @module delivery/shutdown — what delivery has out at any moment, so that stop() gets all of it back by its
 * deadline: background work (routing, settles), the transactions in flight with their connections, and the
 * waits that a stop cuts short.
 */
import type { Job } from "./job.ts";
import type { Connection } from "./types.ts";

export class InFlight {
  /** stop() has begun: no new work starts */
  stopping = false;
  private tasks = new Set<Promise<unknown>>();
  private sending = new Map<Job, Connection | null>();
  private drained: (() => void) | null = null;
  private pauses = new Set<() => void>();

  constructor(private readonly now: () => number) {}

  /** Keeps `p` (routing a claim, a settle) in view of stop(). */
  track(p: Promise<unknown>): void {
    this.tasks.add(p);
    void p.finally(() => this.tasks.delete(p));
  }

  /** A job is being sent on `conn`: in flight until end(). */
  begin(job: Job, conn: Connection | null): void {
    this.sending.set(job, conn);
  }

  /** The job is done with here. False when stop() gave it up meanwhile (it was handed back then). */
  end(job: Job): boolean {
    const had = this.sending.delete(job);
    if (had && this.sending.size === 0) this.drained?.();
    return had;
  }

  /** Still in flight: stop() has not given it up. */
  has(job: Job): boolean {
    return this.sending.has(job);
  }

  /** A wait that stop() cuts short. */
  pause(ms: number): Promise<void> {
    if (ms <= 0 || this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.pauses.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.pauses.add(done);
    });
  }

  /** The first step of stop(): nothing new starts, and every pause ends now. */
  beginStop(): void {
    this.stopping = true;
    for (const p of [...this.pauses]) p();
  }

  /** Background work finishes, or the deadline comes. */
  async tasksDone(deadline: number): Promise<void> {
    await this.until(Promise.allSettled([...this.tasks]), deadline);
  }

  /**
   * Transactions in flight finish (and settle), or the deadline comes: then their connections are closed and the
   * jobs still out are returned, given up (for the caller to hand back).
   */
  async drain(deadline: number): Promise<Job[]> {
    if (this.sending.size > 0) await this.until(new Promise<void>((r) => (this.drained = r)), deadline);
    const jobs = [...this.sending.keys()];
    for (const conn of this.sending.values()) void conn?.close();
    this.sending.clear();
    return jobs;
  }

  /** `p`, or the deadline (ms, this clock), whichever comes first. */
  private async until(p: Promise<unknown>, deadline: number): Promise<void> {
    let t: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((r) => (t = setTimeout(r, Math.max(0, deadline - this.now()))));
    await Promise.race([p, timeout]);
    clearTimeout(t);
  }
}
