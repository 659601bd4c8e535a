/** @module api/metrics — a few Prometheus counters for the HTTP side, rendered as text at GET /metrics. */
import { metric, type Sample } from "../observe/metrics.ts";

export class ApiMetrics {
  accepted = 0;
  recipients = 0;
  replayed = 0;
  private errors = new Map<number, number>();
  /** tracking events recorded, by kind */
  tracked = { clicked: 0, opened: 0, unsubscribed: 0 };
  /** tracking links followed whose token we did not sign (forged, altered, truncated), by kind */
  private forged = { click: 0, open: 0, unsubscribe: 0 };

  sent(recipients: number, replayed: boolean): void {
    if (replayed) {
      this.replayed++;
      return;
    }
    this.accepted++;
    this.recipients += recipients;
  }

  trackingEvent(type: keyof ApiMetrics["tracked"]): void {
    this.tracked[type]++;
  }

  forgedToken(kind: keyof ApiMetrics["forged"]): void {
    this.forged[kind]++;
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
      ...metric("outpost_tracking_clicks_total", "counter", "Clicks recorded (GET /t/c/ with a valid token).", this.tracked.clicked),
      ...metric("outpost_tracking_opens_total", "counter", "Opens recorded (GET /t/o/ with a valid token).", this.tracked.opened),
      ...metric("outpost_tracking_unsubscribes_total", "counter",
        "Recipients unsubscribed (POST /t/u/ with a valid token; a repeat does not count).", this.tracked.unsubscribed),
      ...metric("outpost_tracking_invalid_tokens_total", "counter", "Tracking links followed with a token outpost did not sign, by kind.",
        Object.entries(this.forged).map(([kind, n]): Sample => [{ kind }, n])),
    ];
    if (queueDepth !== null) {
      lines.push(...metric("outpost_queue_depth", "gauge", "Recipients waiting for delivery (queued or deferred).", queueDepth));
    }
    return lines.join("\n") + "\n";
  }
}
