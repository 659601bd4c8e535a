/** @module cli/context — what a state-touching command needs: the loaded config and the open store. */
import { loadConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { openStore, type Store } from "../db/client.ts";
import type { ParsedArgs } from "./args.ts";

export interface CliContext {
  config: Config;
  store: Store;
}

export function openContext(args: ParsedArgs): CliContext {
  const config = loadConfig(args.values.config);
  return { config, store: openStore(config.database.path) };
}

export function print(line = ""): void {
  process.stdout.write(line + "\n");
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
