/** @module api/metrics — a few Prometheus counters for the HTTP side, rendered as text at GET /metrics. */

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
      "# HELP outpost_api_messages_accepted_total Messages accepted by POST /v1/send.",
      "# TYPE outpost_api_messages_accepted_total counter",
      `outpost_api_messages_accepted_total ${this.accepted}`,
      "# HELP outpost_api_recipients_accepted_total Recipients of messages accepted by POST /v1/send.",
      "# TYPE outpost_api_recipients_accepted_total counter",
      `outpost_api_recipients_accepted_total ${this.recipients}`,
      "# HELP outpost_api_idempotent_replays_total Sends answered from an earlier request with the same idempotency key.",
      "# TYPE outpost_api_idempotent_replays_total counter",
      `outpost_api_idempotent_replays_total ${this.replayed}`,
      "# HELP outpost_api_errors_total HTTP error responses by status.",
      "# TYPE outpost_api_errors_total counter",
      ...[...this.errors].sort(([a], [b]) => a - b).map(([s, n]) => `outpost_api_errors_total{status="${s}"} ${n}`),
    ];
    if (queueDepth !== null) {
      lines.push(
        "# HELP outpost_queue_depth Recipients waiting for delivery (queued or deferred).",
        "# TYPE outpost_queue_depth gauge",
        `outpost_queue_depth ${queueDepth}`,
      );
    }
    return lines.join("\n") + "\n";
  }
}
