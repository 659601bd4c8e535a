/**
 * @module api/app — the HTTP API as one Elysia app: a guard (key, rate, body size and type) ahead of every route,
 * the feature plugins, the OpenAPI document, and one onError rendering docs/api.md's `{error:{code,message,field}}`
 * (a known path asked with another method is a 405 with `Allow`), or Postmark's or Mailgun's shape on their routes.
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
import { compatDialect, compatRoutes } from "./compat/index.ts";
import { bodyKind, unsupportedType, writtenNamesOf } from "./send/read.ts";
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

/** What a request body other than a send's may be: suppressions, one-click unsubscribes. */
export const MAX_OTHER_BODY = 64 * 1024;

/**
 * Runs before routing and before any body is read, so a request without a valid key, over its rate, or
 * announcing a body that cannot fit or be read is refused without reading it. The listener sets no size limit of
 * its own (its 413 has no body): every body is bounded here, or, sent without a Content-Length, by the send reader.
 */
function guard(ctx: ApiContext, request: Request): void {
  const path = pathOf(request.url);
  const dialect = compatDialect(path);
  if (dialect || path.startsWith("/v1/")) {
    const who = dialect ? ctx.auth.authenticate(request, dialect.key(request), dialect.missingKey) : ctx.auth.authenticate(request);
    if (ctx.limiter) {
      const waitMs = ctx.limiter.take(who.keyId);
      if (waitMs > 0) throw new RetryLaterError(429, "rate limit exceeded for this API key", Math.max(1, Math.ceil(waitMs / 1000)));
    }
  }
  checkBody(ctx, request, path, dialect !== null);
}

/** `compat`: a route of Postmark's or Mailgun's API (api/compat), each a send, whose reader answers a wrong type. */
function checkBody(ctx: ApiContext, request: Request, path: string, compat: boolean): void {
  const declared = request.headers.get("content-length");
  // HTTP/1.1 frames a body by one of the two (RFC 9112 §6); the headers are read, not `request.body`, whose
  // stream Bun would make for every request
  if (declared === "0" || (declared === null && !request.headers.has("transfer-encoding"))) return;
  const isSend = request.method === "POST" && (path === "/v1/send" || compat);
  const contentType = request.headers.get("content-type");
  const kind = bodyKind(contentType);
  // a tracking link's one-click POST comes from mail providers, whatever they label it (api/tracking.ts reads it)
  if (kind === null && path.startsWith("/v1/")) throw unsupportedType(contentType);
  if (declared === null) {
    // counted as it is read (api/send/read.ts, and api/compat's readers); any other reader would take whatever comes
    if (isSend) return;
    throw new ApiError(411, "length_required", "a request body needs a Content-Length here");
  }
  const max = isSend && kind ? ctx.maxRequestBytes[kind] : MAX_OTHER_BODY;
  if (Number(declared) > max) {
    const what = isSend ? `messages may be at most ${ctx.config.smtp.max_message_size} bytes` : `a body here may be at most ${max} bytes`;
    throw new ApiError(413, "too_large", `request too large: ${what}`, "body");
  }
}

/** The methods routed for `path` ("/v1/messages/x" matches "/v1/messages/:id"); empty for an unknown path. */
function methodsFor(routes: readonly { method: string; path: string }[], path: string): string[] {
  const methods = new Set<string>();
  for (const r of routes) {
    const pattern = new RegExp(`^${r.path.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/:[^/]+/g, "[^/]+").replace(/\*/g, ".*")}$`);
    if (pattern.test(path)) methods.add(r.method);
  }
  return [...methods].sort();
}

/** `ctx`: the shared objects, when the caller keeps them to change later (api/server.ts: a reload's rate). */
export function createApp(deps: ApiDeps, ctx: ApiContext = apiContext(deps)) {
  const app = new Elysia()
    .onError(({ error, code, request }) => {
      const path = pathOf(request.url);
      const allow = code === "NOT_FOUND" ? methodsFor(app.routes, path) : [];
      const wrongMethod = `${request.method} is not allowed here; use ${allow.join(", ")}`;
      // Postmark's and Mailgun's routes answer every error, the guard's included, in their own shape
      const dialect = compatDialect(path);
      if (dialect) {
        const res = dialect.errorResponse(allow.length > 0 ? new ApiError(405, "method_not_allowed", wrongMethod) : error, code, ctx.log);
        if (allow.length > 0) res.headers.set("allow", allow.join(", "));
        ctx.counters.error(res.status);
        return res;
      }
      const written = writtenNamesOf(request);
      let view = viewOf(error, code, ctx.log, written ? (field) => written.rename(field) : undefined);
      if (allow.length > 0) view = { status: 405, code: "method_not_allowed", message: wrongMethod, field: null, allow };
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
    .use(domainRoutes(ctx))
    .use(compatRoutes(ctx));
  return app;
}

export type App = ReturnType<typeof createApp>;
