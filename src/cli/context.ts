/** @module cli/context — what a state-touching command needs: the loaded config and the open store. */
import { loadConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { openStore, type Store } from "../db/client.ts";
import { secretPath } from "../runtime/bootstrap.ts";
import type { ParsedArgs } from "./args.ts";

export interface CliContext {
  config: Config;
  store: Store;
}

export function openContext(args: ParsedArgs): CliContext {
  const config = loadConfig(args.values.config);
  // a data dir whose database was lost is refused here too: a command would otherwise make an empty one, which
  // `serve` could no longer tell from a new install
  return { config, store: openStore(config.database.path, { usedBefore: secretPath(config.data_dir) }) };
}

export function print(line = ""): void {
  process.stdout.write(line + "\n");
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
