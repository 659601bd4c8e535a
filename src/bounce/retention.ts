/** @module bounce/retention — deletes kept bounce-domain mail older than `tracking.inbound_retention`, hourly. */
import type { Database } from "bun:sqlite";
import type { Logger } from "../observe/log.ts";
import { InboundStore } from "./inbound.ts";

export interface RetentionDeps {
  sqlite: Database;
  /** ms */
  retention: number;
  log: Logger;
  /** ms between prunes (default one hour); the first runs at start */
  everyMs?: number;
  now?: () => number;
}

export interface RetentionService {
  name: "inbound_retention";
  /** one prune now; returns how many were deleted */
  prune(): number;
  stop(): Promise<void>;
}

export function startRetention(deps: RetentionDeps): RetentionService {
  const store = new InboundStore(deps.sqlite);
  const now = deps.now ?? Date.now;
  const prune = () => {
    try {
      const n = store.prune(now() - deps.retention);
      if (n > 0) deps.log.info("inbound_pruned", { deleted: n });
      return n;
    } catch (e) {
      deps.log.error("inbound_prune_failed", { error: e });
      return 0;
    }
  };
  prune();
  const timer = setInterval(prune, deps.everyMs ?? 3_600_000);
  timer.unref();
  return {
    name: "inbound_retention",
    prune,
    async stop() {
      clearInterval(timer);
    },
  };
}
