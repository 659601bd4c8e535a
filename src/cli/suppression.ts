/** @module cli/suppression — `outpost suppression list|add|remove`: the operator's view of every user's list. */
import { findUser, listUsers, UserNotFoundError } from "../auth/users.ts";
import type { Db } from "../db/client.ts";
import { parseAddress } from "../mail/address.ts";
import { UsageError } from "../mail/errors.ts";
import { addSuppression, listAllSuppressions, listSuppressions, removeSuppression, type SuppressionOwner } from "../suppression/list.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { isoTime, table } from "./output.ts";
import { openContext, print, printJson } from "./context.ts";

export const SUPPRESSION_USAGE = `usage:
  outpost suppression list [--user U] [--json]   every list, or user U's
  outpost suppression add ADDR [--user U]        without --user: the ownerless list (mail from trusted networks)
  outpost suppression remove ADDR [--user U]     without --user: the ownerless list; complaints too
common: --config FILE`;

// words each subcommand takes, its own name included; an unknown one is reported by name below
const ARITY: Record<string, number> = { list: 1, add: 2, remove: 2 };

/** How the ownerless list is shown. */
const NO_USER = "(no user)";

export async function suppressionCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ["user"] });
  const [sub, addr] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(SUPPRESSION_USAGE, args.flags.has("help"));
  expectPositionals(args, ARITY[sub] ?? Infinity, SUPPRESSION_USAGE);
  if (!(sub in ARITY)) throw new UsageError(`unknown command suppression ${sub}\n${SUPPRESSION_USAGE}`);
  // the lists hold each address's comparison key (mail/address.ts): say what is stored, not what was typed
  const needAddr = () => {
    const p = parseAddress((addr ?? "").trim());
    if (!p.ok) throw new UsageError(`suppression ${sub} needs an address like user@example.com${addr ? `: ${p.reason}` : ""}`);
    return p.key;
  };
  const { store } = openContext(args);
  try {
    const owner = ownerOf(store.db, args.values.user);
    const list = owner === null ? "the ownerless list" : `the list of user ${args.values.user}`;
    switch (sub) {
      case "list":
        return showList(store.db, args.values.user === undefined ? "all" : owner, args.flags.has("json"));
      case "add": {
        const a = needAddr();
        print(addSuppression(store.db, owner, a) ? `${a} added to ${list}` : `${a} was already on ${list}`);
        return 0;
      }
      default: {
        const a = needAddr();
        if (removeSuppression(store.db, owner, a, "remove") === "absent") {
          print(`${a} is not on ${list}`);
          return 1;
        }
        print(`${a} removed from ${list}`);
        return 0;
      }
    }
  } finally {
    store.close();
  }
}

/** --user NAME → that user's id; no --user → the ownerless list. An unknown name exits 1, as `key create` does. */
function ownerOf(db: Db, name: string | undefined): SuppressionOwner {
  if (name === undefined) return null;
  const user = findUser(db, name);
  if (!user) throw new UserNotFoundError(`no user ${name}`);
  return user.id;
}

function showList(db: Db, which: SuppressionOwner | "all", json: boolean): number {
  const names = new Map(listUsers(db).map((u) => [u.id as number, u.name]));
  // an entry outliving its user (a bounce of mail still queued when the user was removed) shows the id
  const userName = (owner: SuppressionOwner) => (owner === null ? null : (names.get(owner) ?? `#${owner}`));
  const rows = (which === "all" ? listAllSuppressions(db) : listSuppressions(db, which)).map((s) => ({
    user: userName(s.owner), address: s.address, reason: s.reason, created_at: isoTime(s.createdAt),
  }));
  if (json) printJson(rows);
  else print(table([["USER", "ADDRESS", "REASON", "SINCE"], ...rows.map((r) => [r.user ?? NO_USER, r.address, r.reason, r.created_at])]));
  return 0;
}
