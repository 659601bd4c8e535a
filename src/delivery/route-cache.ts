/**
 * @module delivery/route-cache — each recipient domain's route, asked of the Router once and trusted for a while
 * (failures only briefly), so a batch of claims costs one lookup per domain.
 */
import type { RouteResult, Router } from "./types.ts";

/** Failures are remembered this long at most: enough to spare the resolver a batch's worth of lookups. */
const FAILURE_TTL_MS = 5_000;
const MAX_DOMAINS = 10_000;

export class RouteCache {
  private routes = new Map<string, { until: number; result: Promise<RouteResult> }>();

  constructor(
    private router: Router,
    private readonly ttlMs: number,
    private readonly now: () => number,
  ) {}

  /** Never rejects: a router that throws gives a temporary failure. */
  route(domain: string): Promise<RouteResult> {
    const now = this.now();
    const hit = this.routes.get(domain);
    if (hit && hit.until > now) return hit.result;
    const result = this.router.route(domain).catch(
      (e): RouteResult => ({ kind: "temporary", reason: `routing failed: ${e instanceof Error ? e.message : String(e)}` }),
    );
    const entry = { until: now + this.ttlMs, result };
    this.routes.set(domain, entry);
    void result.then((r) => {
      if (r.kind !== "ok") entry.until = Math.min(entry.until, this.now() + FAILURE_TTL_MS);
    });
    if (this.routes.size > MAX_DOMAINS) this.routes.delete(this.routes.keys().next().value!);
    return result;
  }

  /** A reload: routes are looked up anew through `router`. */
  replace(router: Router): void {
    this.router = router;
    this.routes.clear();
  }
}
