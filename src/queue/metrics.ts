/**
 * @module queue/metrics — the queue as /metrics shows it: recipients by final status (moved by intake and by
 * delivery, declared once here), and gauges read from the recipients' partial indexes at each scrape.
 */
import type { Database, Statement } from "bun:sqlite";
import type { Counter, Metrics } from "../observe/metrics.ts";

/** Recipients reaching a final status: delivered or bounced (delivery), suppressed (intake). */
export function recipientsFinal(metrics: Metrics): Counter<"status"> {
  return metrics.counter({
    name: "outpost_recipients_final_total",
    help: "Recipients reaching a final status: delivered, bounced (a 5xx or max_queue_time), suppressed (on the sender's suppression list).",
    labelNames: ["status"],
    initial: [{ status: "delivered" }, { status: "bounced" }, { status: "suppressed" }],
  });
}

/**
 * Each count reads one partial index (recipients_new, recipients_retry, recipients_held) and the oldest message is one
 * seek in recipients_pending_message (message ids are time-ordered), so a scrape costs the same on a queue with
 * years of delivered mail behind it; test/observe/metrics.test.ts checks the plans.
 */
export const QUEUE_GAUGE_QUERIES = {
  queued: "SELECT count(*) AS n FROM recipients WHERE status = 'queued'",
  deferred: "SELECT count(*) AS n FROM recipients WHERE status = 'deferred'",
  held: "SELECT count(*) AS n FROM recipients WHERE status = 'held'",
  oldest: `SELECT m.created_at AS n FROM messages m
    WHERE m.id = (SELECT min(message_id) FROM recipients WHERE status IN ('queued','deferred'))`,
} as const;

/** Declares the queue gauges on `metrics`; `now` is the clock the oldest message's age is measured with. */
export function queueGauges(metrics: Metrics, sqlite: Database, now: () => number = Date.now): void {
  const q = Object.fromEntries(
    Object.entries(QUEUE_GAUGE_QUERIES).map(([k, sql]) => [k, sqlite.prepare(sql)]),
  ) as Record<keyof typeof QUEUE_GAUGE_QUERIES, Statement<{ n: number }, []>>;
  metrics.gauge({
    name: "outpost_queue_recipients",
    help: "Recipients in the queue by status: queued (no attempt yet), deferred (waiting for a retry), held (stopped by an operator).",
    labelNames: ["status"],
    collect: (g) => {
      for (const status of ["queued", "deferred", "held"] as const) g.set({ status }, q[status].get()?.n ?? 0);
    },
  });
  metrics.gauge({
    name: "outpost_queue_oldest_age_seconds",
    help: "Age of the oldest message with a recipient still queued or deferred (0: none).",
    collect: (g) => {
      const created = q.oldest.get()?.n;
      g.set(created === undefined ? 0 : Math.max(0, (now() - created) / 1000));
    },
  });
}
