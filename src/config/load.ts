/**
 * @module config/load — finds outpost.toml (--config, ./outpost.toml, /etc/outpost/outpost.toml: docs/config.md), parses it with Bun's TOML
 * parser and returns a validated, deeply frozen `Config`. Any problem is a ConfigError (exit 2).
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { buildConfig, describeFsError, type Env } from "./build.ts";
import { ConfigError } from "./errors.ts";
import type { Config } from "./schema.ts";
import { isTable, Section } from "./section.ts";

/** Where to look when `--config` is not given, in order; relative paths are against the cwd. */
export const CONFIG_SEARCH_PATH: readonly string[] = ["outpost.toml", "/etc/outpost/outpost.toml"];

const DEFAULTS_LABEL = "<defaults>";

/** The config file to read: `explicit` (which must exist), else the first of `search` that exists, else null. */
export function locateConfig(explicit?: string, search: readonly string[] = CONFIG_SEARCH_PATH): string | null {
  if (explicit !== undefined) {
    if (!existsSync(explicit)) throw new ConfigError(explicit, "", "no such file");
    return resolve(explicit);
  }
  const found = search.find((candidate) => existsSync(candidate));
  return found === undefined ? null : resolve(found);
}

/** Locates, reads and validates the configuration; with no file, the built-in defaults. */
export function loadConfig(explicit?: string, env: Env = process.env): Config {
  const file = locateConfig(explicit);
  if (file === null) return parseConfig("", { file: null, env });
  let source: string;
  try {
    source = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(file, "", `cannot read: ${describeFsError(error)}`);
  }
  return parseConfig(source, { file, env });
}

export interface ParseOptions {
  /** the file the text came from (relative paths resolve against its directory); null: none */
  file?: string | null;
  /** where relative paths resolve when there is no file; default: the cwd */
  baseDir?: string;
  env?: Env;
}

/** Validates TOML text as outpost.toml; also handy for tests that need a Config without a file. */
export function parseConfig(source: string, options: ParseOptions = {}): Config {
  const file = options.file ?? null;
  const origin = {
    label: file ?? DEFAULTS_LABEL,
    baseDir: file === null ? resolve(options.baseDir ?? ".") : dirname(file),
  };
  const root = new Section(origin, parseToml(source, origin.label), "");
  const config = buildConfig(root, file, options.env ?? process.env);
  root.finish();
  return deepFreeze(config);
}

function parseToml(source: string, label: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = Bun.TOML.parse(source);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ConfigError(label, "", `TOML syntax error: ${message.replace(/^TOML Parse error:\s*/, "")}`);
  }
  if (!isTable(parsed)) throw new ConfigError(label, "", "expected a TOML table at the top level");
  return parsed;
}

/** Frozen all the way down, so no part of the program can change settings another part relies on. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
