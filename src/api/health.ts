/** @module api/health — GET /healthz (store reachable and not failing, queue depth); no key needed. */
import { Elysia, t } from "elysia";
import { ApiError } from "../mail/errors.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody } from "./model.ts";

export function healthRoutes(ctx: ApiContext) {
  const depth = (): number | null => {
    try {
      return ctx.inspector.queueDepth();
    } catch (e) {
      ctx.log.error("healthz_store_failed", { error: e });
      return null;
    }
  };
  return new Elysia()
    .get(
      "/healthz",
      () => {
        // a store that still answers reads may be failing every write (disk full): what the work reported comes first
        const health = ctx.health.status();
        if (!health.ok) throw new ApiError(503, "unavailable", `${health.reason}, since ${new Date(health.since).toISOString()}`);
        const queueDepth = depth();
        if (queueDepth === null) throw new ApiError(503, "unavailable", "the store is not reachable");
        return { status: "ok" as const, queue_depth: queueDepth };
      },
      {
        response: {
          200: t.Object({ status: t.Literal("ok"), queue_depth: t.Integer({ description: "recipients queued or deferred" }) }),
          503: ErrorBody,
        },
        detail: { tags: ["operations"], summary: "Health: the store answers and its writes are not failing; the queue depth", security: [] },
      },
    );
}
