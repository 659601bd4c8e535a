/**
 * @module api/metrics — what the HTTP side counts (replays, errors, tracking hits), and GET /metrics: the runtime's
 * registry as Prometheus text, behind `http.metrics_token` when one is set.
 */
import { timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import { ApiError } from "../mail/errors.ts";
import type { Counter, Metrics } from "../observe/metrics.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody } from "./model.ts";

type Tracked = "clicked" | "opened" | "unsubscribed";
type TokenKind = "click" | "open" | "unsubscribe";

export class ApiMetrics {
  private replays: Counter;
  private errors: Counter<"status">;
  private tracked: Record<Tracked, Counter>;
  private invalidTokens: Counter<"kind">;

  constructor(metrics: Metrics) {
    this.replays = metrics.counter({
      name: "outpost_api_idempotent_replays_total",
      help: "Sends answered from an earlier request with the same idempotency key.",
    });
    this.errors = metrics.counter({ name: "outpost_api_errors_total", help: "HTTP error responses by status.", labelNames: ["status"] });
    this.tracked = {
      clicked: metrics.counter({ name: "outpost_tracking_clicks_total", help: "Clicks recorded (GET /t/c/ with a valid token)." }),
      opened: metrics.counter({ name: "outpost_tracking_opens_total", help: "Opens recorded (GET /t/o/ with a valid token)." }),
      unsubscribed: metrics.counter({
        name: "outpost_tracking_unsubscribes_total",
        help: "Recipients unsubscribed (POST /t/u/ with a valid token; a repeat does not count).",
      }),
    };
    this.invalidTokens = metrics.counter({
      name: "outpost_tracking_invalid_tokens_total",
      help: "Tracking links followed with a token outpost did not sign, by kind.",
      labelNames: ["kind"],
      initial: [{ kind: "click" }, { kind: "open" }, { kind: "unsubscribe" }],
    });
  }

  /** A send answered from an earlier one (a new message is counted by intake, with the others). */
  replayed(): void {
    this.replays.inc();
  }

  trackingEvent(type: Tracked): void {
    this.tracked[type].inc();
  }

  forgedToken(kind: TokenKind): void {
    this.invalidTokens.inc({ kind });
  }

  error(status: number): void {
    this.errors.inc({ status: String(status) });
  }
}

/** Does the request carry `Authorization: Bearer TOKEN`? Compared in constant time (the lengths may differ). */
export function hasBearer(request: Request, token: string): boolean {
  const header = request.headers.get("authorization") ?? "";
  const m = /^Bearer +(\S+)\s*$/i.exec(header);
  if (!m) return false;
  const given = Buffer.from(m[1]!);
  const expected = Buffer.from(token);
  // timingSafeEqual needs equal lengths; comparing the expected value with itself keeps the time the same
  const same = timingSafeEqual(given.length === expected.length ? given : expected, expected);
  return same && given.length === expected.length;
}

export function metricsRoutes(ctx: ApiContext) {
  return new Elysia().get(
    "/metrics",
    async ({ request, set }) => {
      const token = ctx.config.http.metrics_token;
      if (token !== "" && !hasBearer(request, token)) {
        throw new ApiError(401, "unauthorized", "/metrics needs Authorization: Bearer with http.metrics_token");
      }
      set.headers["content-type"] = ctx.metrics.contentType;
      return ctx.metrics.render();
    },
    {
      response: { 401: ErrorBody },
      detail: {
        tags: ["operations"],
        summary: "Prometheus metrics (text exposition format 0.0.4)",
        description:
          "Every metric outpost counts (docs/api.md lists them). No key is needed, unless the operator set `http.metrics_token`: " +
          "then `Authorization: Bearer TOKEN` with that token, else 401.",
        security: [{ metrics_token: [] }, {}],
      },
    },
  );
}
