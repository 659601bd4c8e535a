/** @module api/metrics — a few Prometheus counters for the HTTP side, rendered as text at GET /metrics. */
import { metric, type Sample } from "../observe/metrics.ts";

export class ApiMetrics {
  accepted = 0;
  recipients = 0;
  replayed = 0;
  private errors = new Map<number, number>();

  sent(recipients: number, replayed: boolean): void {
    if (replayed) {
      this.replayed++;
      return;
    }
    this.accepted++;
    this.recipients += recipients;
  }

  error(status: number): void {
    this.errors.set(status, (this.errors.get(status) ?? 0) + 1);
  }

  /** Prometheus text exposition format 0.0.4. */
  render(queueDepth: number | null): string {
    const lines = [
      ...metric("outpost_api_messages_accepted_total", "counter", "Messages accepted by POST /v1/send.", this.accepted),
      ...metric("outpost_api_recipients_accepted_total", "counter", "Recipients of messages accepted by POST /v1/send.", this.recipients),
      ...metric("outpost_api_idempotent_replays_total", "counter",
        "Sends answered from an earlier request with the same idempotency key.", this.replayed),
      ...metric("outpost_api_errors_total", "counter", "HTTP error responses by status.",
        [...this.errors].sort(([a], [b]) => a - b).map(([s, n]): Sample => [{ status: String(s) }, n])),
    ];
    if (queueDepth !== null) {
      lines.push(...metric("outpost_queue_depth", "gauge", "Recipients waiting for delivery (queued or deferred).", queueDepth));
    }
    return lines.join("\n") + "\n";
  }
}
