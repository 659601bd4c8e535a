/**
 * @module delivery/lanes — the jobs waiting for one destination, in two lanes: retries and first attempts.
 *
 * Workers take from the lanes in turn while both have work, and from a retry first when one came in while only
 * new mail was waiting. So a due retry waits behind at most one first attempt per retry ahead of it (plus what
 * is already being sent), however much new mail keeps coming; and a flood of retries after an outage takes at
 * most half of the destination's transactions from new mail. Within a lane, jobs go in the order they came.
 */

export interface LaneJob {
  /** a retry: some recipient of it was tried before */
  retry: boolean;
  /** when it was claimed (this scheduler's clock) */
  claimedAt: number;
  /** its recipients (a job without is counted as one) */
  recipients?: readonly unknown[];
}

export class JobLanes<J extends LaneJob> {
  private retries: J[] = [];
  private fresh: J[] = [];
  /** the next job taken is a retry, if one waits (set after a first attempt was taken) */
  private retryNext = true;

  get length(): number {
    return this.retries.length + this.fresh.length;
  }

  /** Jobs waiting in one lane. */
  waiting(kind: "retry" | "fresh"): number {
    return kind === "retry" ? this.retries.length : this.fresh.length;
  }

  /** Recipients waiting in both lanes: what the destination holds of the scheduler's window. */
  recipients(): number {
    let n = 0;
    for (const j of this.retries) n += j.recipients?.length ?? 1;
    for (const j of this.fresh) n += j.recipients?.length ?? 1;
    return n;
  }

  push(job: J): void {
    this.lane(job).push(job);
  }

  /** Back at the head of its lane: it was taken and could not go (a connection that turned out dead). */
  unshift(job: J): void {
    this.lane(job).unshift(job);
  }

  /** The next job: lanes in turn while both have work. */
  shift(): J | undefined {
    const lane = this.retries.length > 0 && (this.retryNext || this.fresh.length === 0) ? this.retries : this.fresh;
    const job = lane.shift();
    if (job) this.retryNext = lane === this.fresh;
    return job;
  }

  /** Every waiting job, retries first; the lanes are empty after. */
  takeAll(): J[] {
    return [...this.retries.splice(0), ...this.fresh.splice(0)];
  }

  /** The jobs claimed before `before`, out of both lanes. */
  takeClaimedBefore(before: number): J[] {
    const stale = (j: J) => j.claimedAt < before;
    const out = [...this.retries.filter(stale), ...this.fresh.filter(stale)];
    if (out.length > 0) {
      this.retries = this.retries.filter((j) => !stale(j));
      this.fresh = this.fresh.filter((j) => !stale(j));
    }
    return out;
  }

  private lane(job: J): J[] {
    return job.retry ? this.retries : this.fresh;
  }
}
