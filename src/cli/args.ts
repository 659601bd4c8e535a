/** @module cli/args — parses `outpost` argv into positionals and flags; unknown flags are usage errors. */
import { UsageError } from "../mail/errors.ts";

export interface FlagSpec {
  /** flags that take a value; repeatable ones collect into arrays */
  values?: string[];
  repeatable?: string[];
  booleans?: string[];
  /** for commands without subcommands: how many positionals they take (more are usage errors), and their usage */
  positionals?: number;
  usage?: string;
}

export interface ParsedArgs {
  positionals: string[];
  values: Record<string, string | undefined>;
  lists: Record<string, string[]>;
  flags: Set<string>;
}

const COMMON_VALUES = ["config"];
const COMMON_BOOLEANS = ["help", "json"];

export function parseArgs(argv: string[], spec: FlagSpec = {}): ParsedArgs {
  const valueFlags = new Set([...COMMON_VALUES, ...(spec.values ?? []), ...(spec.repeatable ?? [])]);
  const booleans = new Set([...COMMON_BOOLEANS, ...(spec.booleans ?? [])]);
  const out: ParsedArgs = { positionals: [], values: {}, lists: {}, flags: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h") {
      out.flags.add("help");
      continue;
    }
    if (!arg.startsWith("--")) {
      out.positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (booleans.has(name) && eq < 0) {
      out.flags.add(name);
    } else if (valueFlags.has(name)) {
      const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      if (spec.repeatable?.includes(name)) (out.lists[name] ??= []).push(value);
      else out.values[name] = value;
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  if (spec.positionals !== undefined) expectPositionals(out, spec.positionals, spec.usage ?? "");
  return out;
}

/**
 * A word the command does not use is a usage error, not something to ignore: `migrate extra` may be a typo
 * for a command that does something else. --help wins, so `CMD stray --help` still shows the usage.
 */
export function expectPositionals(args: ParsedArgs, max: number, usage: string): void {
  const extra = args.positionals[max];
  if (extra === undefined || args.flags.has("help")) return;
  throw new UsageError(`unexpected argument ${extra}${usage ? `\n\n${usage}` : ""}`);
}

/**
 * Prints a usage text: asked for with --help it is output (stdout, exit 0); shown because the command line
 * was incomplete it is an error (stderr, exit 2), so `outpost user > file` does not put it in the file.
 */
export function showUsage(usage: string, asked: boolean): number {
  if (asked) {
    process.stdout.write(usage + "\n");
    return 0;
  }
  process.stderr.write(usage + "\n");
  return 2;
}

