/** @module cli/key — `outpost key create|list|revoke`. */
import { createKey, listKeys, revokeKey } from "../auth/keys.ts";
import { findUser, listUsers, UserNotFoundError } from "../auth/users.ts";
import { UsageError } from "../mail/errors.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { isoTime, table } from "./output.ts";
import { openContext, print, printJson } from "./context.ts";

export const KEY_USAGE = `usage:
  outpost key create NAME [--user U]   print a new API key (only its hash is stored); U defaults to admin
  outpost key list [--json]
  outpost key revoke ID
common: --config FILE`;

// words each subcommand takes, its own name included; an unknown one is reported by name below
const ARITY: Record<string, number> = { create: 2, list: 1, revoke: 2 };

export async function keyCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ["user"] });
  const [sub, arg] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(KEY_USAGE, args.flags.has("help"));
  expectPositionals(args, ARITY[sub] ?? Infinity, KEY_USAGE);
  const { store } = openContext(args);
  try {
    switch (sub) {
      case "create": {
        if (!arg) throw new UsageError("key create needs NAME");
        const userName = args.values.user ?? "admin";
        const user = findUser(store.db, userName);
        if (!user && args.values.user === undefined) throw new UsageError(noAdmin(listUsers(store.db).map((u) => u.name)));
        // exit 1 as `user remove nobody`: the command is well formed, the user just does not exist
        if (!user) throw new UserNotFoundError(`no user ${userName} (create one with: outpost user add ${userName})`);
        const { key, info } = createKey(store.db, user.id, arg);
        print(`key ${info.id} created for user ${user.name}`);
        print(`api key: ${key}`);
        return 0;
      }
      case "list": {
        const names = new Map(listUsers(store.db).map((u) => [u.id as number, u.name]));
        const keys = listKeys(store.db).map((k) => ({
          id: k.id, name: k.name, user: names.get(k.userId) ?? "?", prefix: k.prefix,
          created_at: isoTime(k.createdAt), revoked_at: k.revokedAt ? isoTime(k.revokedAt) : null,
        }));
        if (args.flags.has("json")) printJson(keys);
        else print(table([["ID", "NAME", "USER", "PREFIX", "CREATED", "REVOKED"], ...keys.map((k) => [k.id, k.name, k.user, k.prefix + "…", k.created_at, k.revoked_at ?? "-"])]));
        return 0;
      }
      case "revoke":
        if (!arg) throw new UsageError("key revoke needs ID");
        revokeKey(store.db, arg);
        print(`key ${arg} revoked`);
        return 0;
      default:
        throw new UsageError(`unknown command key ${sub}\n${KEY_USAGE}`);
    }
  } finally {
    store.close();
  }
}

/** `key create` without --user when there is no `admin` (users made with `outpost user add` before the first start). */
function noAdmin(users: string[]): string {
  if (users.length === 0) return "key create: there are no users yet; create one with: outpost user add NAME";
  return `key create needs --user: there is no user admin; the users are ${users.join(", ")} (outpost key create NAME --user ${users[0]})`;
}
