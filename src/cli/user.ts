/** @module cli/user — `outpost user add|list|remove|passwd`. */
import {
  addUser, BadDomainError, changeDomains, findUser, generatePassword, isValidUserName, listUsers, parseSenderDomain, removeUser, setPassword,
  UserNotFoundError, type User,
} from "../auth/users.ts";
import { removeListOf } from "../suppression/list.ts";
import { UsageError } from "../mail/errors.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { isoTime, table } from "./output.ts";
import { openContext, print, printJson } from "./context.ts";

export const USER_USAGE = `usage:
  outpost user add NAME [--password P] [--domain D]...   create a user (prints the password if generated)
  outpost user list [--json]
  outpost user remove NAME                               remove the user, their API keys and suppression list
  outpost user passwd NAME [--password P]                set a new password (prints it if generated)
  outpost user domains NAME [--add D]... [--remove D]... [--json]
                                 the domains NAME may send from (envelope sender, From, Sender); D is
                                 "example.com", or "*.example.com" for its subdomains; none listed: any domain
common: --config FILE`;

// words each subcommand takes, its own name included; an unknown one is reported by name below
const ARITY: Record<string, number> = { add: 2, list: 1, remove: 2, passwd: 2, domains: 2 };

export async function userCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ["password"], repeatable: ["domain", "add", "remove"] });
  const [sub, name] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(USER_USAGE, args.flags.has("help"));
  expectPositionals(args, ARITY[sub] ?? Infinity, USER_USAGE);
  const needName = () => {
    if (!name) throw new UsageError(`user ${sub} needs NAME`);
    if (!isValidUserName(name)) throw new UsageError(`invalid user name ${JSON.stringify(name)} (letters, digits, . _ @ + -)`);
    return name;
  };
  const domains = args.lists.domain ?? [];
  for (const d of [...domains, ...(args.lists.add ?? []), ...(args.lists.remove ?? [])]) checkDomain(d);
  const { store } = openContext(args);
  try {
    switch (sub) {
      case "add": {
        const password = args.values.password ?? generatePassword();
        const user = await addUser(store.db, needName(), password, domains);
        print(`user ${user.name} created${user.domains.length ? ` (sender domains: ${user.domains.join(", ")})` : ""}`);
        if (!args.values.password) print(`password: ${password}`);
        // `serve` makes a key only for the admin it creates when there are no users, so say how to get one
        print(`API key (for the HTTP API): outpost key create NAME --user ${user.name}`);
        return 0;
      }
      case "list": {
        const users = listUsers(store.db);
        if (args.flags.has("json")) printJson(users.map(({ id, name, domains, createdAt }) => ({ id, name, domains, created_at: isoTime(createdAt) })));
        else print(table([["NAME", "DOMAINS", "CREATED"], ...users.map((u) => [u.name, u.domains.join(",") || "*", isoTime(u.createdAt)])]));
        return 0;
      }
      case "remove": {
        // the user's suppression list goes with them: no one could see or change it any more
        const dropped = store.sqlite.transaction(() => {
          const user = findUser(store.db, needName());
          removeUser(store.db, needName());
          return user ? removeListOf(store.db, user.id) : 0;
        })();
        print(`user ${name} removed${dropped ? `, with the ${dropped} ${dropped === 1 ? "entry" : "entries"} of their suppression list` : ""}`);
        return 0;
      }
      case "passwd": {
        const password = args.values.password ?? generatePassword();
        await setPassword(store.db, needName(), password);
        print(`password of ${name} changed`);
        if (!args.values.password) print(`password: ${password}`);
        return 0;
      }
      case "domains": {
        const add = args.lists.add ?? [];
        const remove = args.lists.remove ?? [];
        const user = add.length || remove.length ? changeDomains(store.db, needName(), add, remove) : findUser(store.db, needName());
        if (!user) throw new UserNotFoundError(`no user ${name}`);
        printDomains(user, args.flags.has("json"), add.length + remove.length > 0);
        return 0;
      }
      default:
        throw new UsageError(`unknown command user ${sub}\n${USER_USAGE}`);
    }
  } finally {
    store.close();
  }
}

function checkDomain(text: string): void {
  try {
    parseSenderDomain(text);
  } catch (e) {
    if (e instanceof BadDomainError) throw new UsageError(e.message);
    throw e;
  }
}

function printDomains(user: User, json: boolean, changed: boolean): void {
  if (json) return printJson({ name: user.name, domains: user.domains });
  if (user.domains.length === 0) {
    // removing the last domain lifts the restriction: say so, it is not what "remove" sounds like
    print(`${user.name} may send from any domain${changed ? " (no sender domains are left)" : ""}`);
    return;
  }
  print(`${user.name} may send from:`);
  for (const d of user.domains) print(`  ${d}`);
}
