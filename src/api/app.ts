/**
 * @module api/app — the HTTP API as one Elysia app: a guard (key, rate, size) ahead of every /v1/ route,
 * the feature plugins, the OpenAPI document, and one onError rendering SPEC's `{error:{code,message,field}}`.
 */
import { Elysia } from "elysia";
import pkg from "../../package.json";
import { ApiError } from "../mail/errors.ts";
import { apiContext, type ApiContext, type ApiDeps } from "./context.ts";
import { errorResponse, RetryLaterError, viewOf } from "./errors.ts";
import { domainRoutes } from "./domains.ts";
import { eventRoutes } from "./events.ts";
import { healthRoutes } from "./health.ts";
import { messageRoutes } from "./messages.ts";
import { metricsRoutes } from "./metrics.ts";
import { docsAssets, openapiPlugin } from "./openapi.ts";
import { bodyKind, writtenNamesOf } from "./send/read.ts";
import { sendRoutes } from "./send/index.ts";
import { suppressionRoutes } from "./suppressions.ts";
import { trackingRoutes } from "./tracking.ts";

export type { ApiDeps } from "./context.ts";

/** "http://host:port/v1/send?x" → "/v1/send" without building a URL object on the hot path. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const q = url.indexOf("?", start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

/**
 * Runs before routing and before any body is read, so a request without a valid key, over its rate, or
 * announcing a body that cannot fit is refused without reading it.
 */
function guard(ctx: ApiContext, request: Request): void {
  const path = pathOf(request.url);
  if (!path.startsWith("/v1/")) return;
  const who = ctx.auth.authenticate(request);
  if (ctx.limiter) {
    const waitMs = ctx.limiter.take(who.keyId);
    if (waitMs > 0) throw new RetryLaterError(429, "rate limit exceeded for this API key", Math.max(1, Math.ceil(waitMs / 1000)));
  }
  if (request.method === "POST" && path === "/v1/send") {
    const length = Number(request.headers.get("content-length") ?? 0);
    const kind = bodyKind(request.headers.get("content-type"));
    if (kind && length > ctx.maxRequestBytes[kind]) {
      throw new ApiError(413, "too_large", `request too large: messages may be at most ${ctx.config.smtp.max_message_size} bytes`, "body");
    }
  }
}

/** `ctx`: the shared objects, when the caller keeps them to change later (api/server.ts: a reload's rate). */
export function createApp(deps: ApiDeps, ctx: ApiContext = apiContext(deps)) {
  return new Elysia()
    .onError(({ error, code, request }) => {
      const written = writtenNamesOf(request);
      const view = viewOf(error, code, ctx.log, written ? (field) => written.rename(field) : undefined);
      ctx.counters.error(view.status);
      return errorResponse(view);
    })
    .onRequest(({ request }) => guard(ctx, request))
    .use(openapiPlugin(pkg.version))
    .use(docsAssets())
    .use(healthRoutes(ctx))
    .use(metricsRoutes(ctx))
    .use(sendRoutes(ctx))
    .use(messageRoutes(ctx))
    .use(eventRoutes(ctx))
    .use(suppressionRoutes(ctx))
    .use(trackingRoutes(ctx))
    .use(domainRoutes(ctx));
}

export type App = ReturnType<typeof createApp>;
