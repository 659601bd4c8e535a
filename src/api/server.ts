/** @module api/server — runs the API app on `[http] listen` as a runtime Service. */
import type { HttpConfig } from "../config/schema.ts";
import { createApp, type ApiDeps } from "./app.ts";
import { apiContext } from "./context.ts";
import { RateLimiter } from "./rate.ts";

export interface HttpListener {
  /** the bound port (useful when the config said port 0) */
  port: number;
  /** a runtime Service (runtime/start.ts), declared here by shape: api/ does not import the runtime */
  service: { name: string; stop(): Promise<void> };
  /**
   * A reload (SIGHUP): `http.rate` anew (every key starts with a full bucket) and `http.metrics_token`; the listener
   * needs a restart.
   */
  reconfigure(http: HttpConfig): void;
}

export function startHttp(deps: ApiDeps): HttpListener {
  const { host, port } = deps.config.http.listen;
  const ctx = apiContext(deps);
  const app = createApp(deps, ctx);
  try {
    app.listen({
      hostname: host,
      port,
      // Elysia turns SO_REUSEPORT on by default: a second outpost on the same port would then share it (requests
      // alternating between the two) instead of failing with EADDRINUSE
      reusePort: false,
      // none of Bun's own: its 413 comes without a body. The app's guard bounds every body (api/app.ts)
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    });
  } catch (e) {
    throw new Error(`cannot listen on ${host}:${port} (http.listen): ${e instanceof Error ? e.message : String(e)}`);
  }
  const server = app.server;
  if (!server) throw new Error(`HTTP listener on ${host}:${port} did not start`);
  deps.log.info("http_listening", { host, port: server.port });
  return {
    port: server.port ?? port,
    service: {
      name: "http",
      // stop accepting; requests in flight finish (their commits included) before the store closes
      stop: async () => {
        await app.stop();
      },
    },
    reconfigure(http) {
      ctx.limiter = http.rate ? new RateLimiter(http.rate) : null;
      ctx.config = { ...ctx.config, http };
    },
  };
}
