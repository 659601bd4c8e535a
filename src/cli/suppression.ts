/** @module cli/suppression — `outpost suppression list|add|remove`. */
import { addSuppression, listSuppressions, removeSuppression } from "../suppression/list.ts";
import { UsageError } from "../mail/errors.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { isoTime, table } from "./output.ts";
import { openContext, print, printJson } from "./context.ts";

export const SUPPRESSION_USAGE = `usage:
  outpost suppression list [--json]
  outpost suppression add ADDR
  outpost suppression remove ADDR
common: --config FILE`;

const ADDR_RE = /^[^\s@<>]+@[^\s@<>]+$/;

// words each subcommand takes, its own name included; an unknown one is reported by name below
const ARITY: Record<string, number> = { list: 1, add: 2, remove: 2 };

export async function suppressionCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const [sub, addr] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(SUPPRESSION_USAGE, args.flags.has("help"));
  expectPositionals(args, ARITY[sub] ?? Infinity, SUPPRESSION_USAGE);
  // the list holds addresses lower-cased (suppression/list.ts): say what is stored, not what was typed
  const needAddr = () => {
    if (!addr || !ADDR_RE.test(addr)) throw new UsageError(`suppression ${sub} needs an address like user@example.com`);
    return addr.trim().toLowerCase();
  };
  const { store } = openContext(args);
  try {
    switch (sub) {
      case "list": {
        const list = listSuppressions(store.db);
        if (args.flags.has("json")) printJson(list.map((s) => ({ address: s.address, reason: s.reason, created_at: isoTime(s.createdAt) })));
        else print(table([["ADDRESS", "REASON", "SINCE"], ...list.map((s) => [s.address, s.reason, isoTime(s.createdAt)])]));
        return 0;
      }
      case "add": {
        const a = needAddr();
        print(addSuppression(store.db, a) ? `${a} suppressed` : `${a} was already suppressed`);
        return 0;
      }
      case "remove": {
        const a = needAddr();
        if (!removeSuppression(store.db, a)) {
          print(`${a} is not on the suppression list`);
          return 1;
        }
        print(`${a} removed from the suppression list`);
        return 0;
      }
      default:
        throw new UsageError(`unknown command suppression ${sub}\n${SUPPRESSION_USAGE}`);
    }
  } finally {
    store.close();
  }
}
