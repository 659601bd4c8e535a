/** @module api/context — the objects every route plugin shares, built once per app from the runtime's parts. */
import type { Config } from "../config/schema.ts";
import type { Store } from "../db/client.ts";
import { EventQuery } from "../events/query.ts";
import type { Intake } from "../intake/accept.ts";
import type { HealthStatus } from "../observe/health.ts";
import type { Logger } from "../observe/log.ts";
import type { Metrics } from "../observe/metrics.ts";
import { QueueInspector } from "../queue/inspect.ts";
import { domainChecker, type DomainReport } from "../spf/check.ts";
import type { TrackingRecorder } from "../tracking/record.ts";
import type { TrackingTokens } from "../tracking/token.ts";
import { ApiAuth } from "./auth.ts";
import { ApiMetrics } from "./metrics.ts";
import { RateLimiter } from "./rate.ts";
import { SendService } from "./send/service.ts";

/** What the HTTP API needs from the runtime. */
export interface ApiDeps {
  config: Config;
  store: Store;
  intake: Intake;
  log: Logger;
  /** verifies the tokens in click, open and unsubscribe links */
  tokens: TrackingTokens;
  /** records what a valid tracking link reports */
  tracking: TrackingRecorder;
  /** whether the store is failing, as the work using it reports (observe/health.ts) */
  health: { status(): HealthStatus };
  /** the runtime's registry: the API declares its own counters on it, and GET /metrics renders all of it */
  metrics: Metrics;
  /** the domain check (spf/check.ts); default: one of `config`, with its own DNS answer cache */
  checkDomain?: (domain: string) => Promise<DomainReport>;
}

export interface ApiContext extends ApiDeps {
  checkDomain: (domain: string) => Promise<DomainReport>;
  auth: ApiAuth;
  limiter: RateLimiter | null;
  inspector: QueueInspector;
  events: EventQuery;
  sender: SendService;
  /** what the HTTP side counts */
  counters: ApiMetrics;
  /** bytes a /v1/send request may have, by body kind, before it is refused unread with 413 */
  maxRequestBytes: { json: number; urlencoded: number; multipart: number };
}

/**
 * How big a request can be and still carry a message of `maxMessage` bytes. JSON written with \uXXXX escapes
 * (Python's json.dumps default) takes 6 bytes for a 2-byte UTF-8 character and 12 (a surrogate pair) for a
 * 4-byte one: 3×. Only control characters escape worse (\u00XX, 6×), and a MIME message has next to none.
 * Percent-encoding can triple a form field too. A multipart body carries its text and files as they are,
 * and base64 attachments in a JSON field grow by 4/3, so 2× holds there.
 */
export function requestLimits(maxMessage: number): ApiContext["maxRequestBytes"] {
  const slack = 64 * 1024;
  return { json: maxMessage * 3 + slack, multipart: maxMessage * 2 + slack, urlencoded: maxMessage * 3 + slack };
}

export function apiContext(deps: ApiDeps): ApiContext {
  const inspector = new QueueInspector(deps.store.sqlite);
  return {
    ...deps,
    checkDomain: deps.checkDomain ?? domainChecker(deps.config),
    auth: new ApiAuth(deps.store.db),
    limiter: deps.config.http.rate ? new RateLimiter(deps.config.http.rate) : null,
    inspector,
    events: new EventQuery(deps.store.sqlite),
    sender: new SendService(deps.intake, inspector, deps.config.hostname),
    counters: new ApiMetrics(deps.metrics),
    maxRequestBytes: requestLimits(deps.config.smtp.max_message_size),
  };
}
