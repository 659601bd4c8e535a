/**
 * @module cli/serve — `outpost serve`: run until SIGTERM/SIGINT, then stop within 30 s and exit 0; SIGHUP
 * reads the config and the TLS certificate again (runtime/reload.ts).
 */
import { loadConfig } from "../config/load.ts";
import { createLogger } from "../observe/log.ts";
import { start } from "../runtime/start.ts";
import { parseArgs } from "./args.ts";
import { print } from "./context.ts";

export const SERVE_USAGE = `usage: outpost serve [--config FILE]
  runs the SMTP listeners, the HTTP API and delivery until SIGTERM;
  SIGHUP reads the config file and the TLS certificate again`;

const SHUTDOWN_LIMIT_MS = 30_000;

export async function serveCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { positionals: 0, usage: SERVE_USAGE });
  if (args.flags.has("help")) {
    print(SERVE_USAGE);
    return 0;
  }
  const config = loadConfig(args.values.config);
  const log = createLogger(config.log_level);
  // handlers first: a signal that arrives while the runtime is starting must still stop it cleanly
  let signalled: (signal: string) => void = () => {};
  const stopRequested = new Promise<string>((resolve) => (signalled = resolve));
  process.once("SIGTERM", () => signalled("SIGTERM"));
  process.once("SIGINT", () => signalled("SIGINT"));
  // SIGHUP's default would end the process: one that arrives while starting is answered once started
  let reloadPending = false;
  let reload = (): void => {
    reloadPending = true;
  };
  process.on("SIGHUP", () => reload());
  // first-run secrets go to stderr (start's default): stdout stays one JSON log line per line, for jq
  const rt = await start(config, log);
  reload = () => {
    try {
      rt.reload(() => loadConfig(args.values.config));
    } catch (e) {
      // a refused config is logged by the reload itself; this is a bug, and must not end a running serve
      log.error("config_reload_failed", { error: e });
    }
  };
  if (reloadPending) reload();
  log.info("stopping", { signal: await stopRequested });
  reload = () => log.info("config_reload_ignored", { reason: "stopping" });
  const timer = setTimeout(() => {
    log.error("shutdown_timeout", { limit_ms: SHUTDOWN_LIMIT_MS });
    process.exit(1);
  }, SHUTDOWN_LIMIT_MS);
  await rt.stop();
  clearTimeout(timer);
  log.info("stopped");
  return 0;
}
