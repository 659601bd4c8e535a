/** @module cli/index — dispatches `outpost COMMAND …` and maps errors to exit codes (0 ok, 1 runtime, 2 usage/config). */
import { ConfigError } from "../config/errors.ts";
import { UsageError } from "../mail/errors.ts";
import { UserExistsError, UserNotFoundError } from "../auth/users.ts";
import { KeyNotFoundError } from "../auth/keys.ts";
import { parseArgs, showUsage } from "./args.ts";
import pkg from "../../package.json";

export const VERSION: string = pkg.version;

export const USAGE = `outpost ${VERSION} — self-hosted email relay

usage: outpost COMMAND [ARGS] [--config FILE]

commands:
  serve                          run SMTP listeners, HTTP API and delivery
  user add|list|remove|passwd|domains   manage users who may send (SMTP AUTH, API keys) and their sender domains
  key create|list|revoke         manage API keys
  queue list|show|retry|delete|hold|release   the delivery queue (mailq, postsuper); queue flush retries all now
  suppression list|add|remove    addresses never sent to
  bounce list|show               mail kept at the bounce domain (postmaster, abuse, unreadable reports)
  webhook list|test|retry        event webhooks: what waits per hook, a signed test POST, send failed events again
  dkim generate DOMAIN           make a DKIM signing key; print the DNS TXT record and the [[dkim]] lines
  spf record|check               the SPF records to publish; check a sender domain (SPF, DKIM, DMARC, MX)
  migrate                        apply database migrations and exit
  version                        print the version

Run 'outpost COMMAND --help' for a command's options.
--config defaults to ./outpost.toml, else /etc/outpost/outpost.toml, else built-in defaults.`;

const VERSION_USAGE = "usage: outpost version\n  print the version";

type Command = (argv: string[]) => Promise<number>;

// loaded on use, so `outpost version` or `user list` do not pay for loading the SMTP and HTTP stacks
const COMMANDS: Record<string, Command> = {
  serve: async (a) => (await import("./serve.ts")).serveCommand(a),
  user: async (a) => (await import("./user.ts")).userCommand(a),
  key: async (a) => (await import("./key.ts")).keyCommand(a),
  queue: async (a) => (await import("./queue.ts")).queueCommand(a),
  suppression: async (a) => (await import("./suppression.ts")).suppressionCommand(a),
  bounce: async (a) => (await import("./bounce.ts")).bounceCommand(a),
  webhook: async (a) => (await import("./webhook.ts")).webhookCommand(a),
  dkim: async (a) => (await import("./dkim.ts")).dkimCommand(a),
  spf: async (a) => (await import("./spf.ts")).spfCommand(a),
  migrate: async (a) => (await import("./migrate.ts")).migrateCommand(a),
  version: async (a) => {
    const args = parseArgs(a, { positionals: 0, usage: VERSION_USAGE });
    if (args.flags.has("help")) return showUsage(VERSION_USAGE, true);
    process.stdout.write(`outpost ${VERSION}\n`);
    return 0;
  },
};

export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") return showUsage(USAGE, Boolean(name));
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`outpost: unknown command ${name}\n\n${USAGE}\n`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (e) {
    return reportError(e);
  }
}

function reportError(e: unknown): number {
  if (e instanceof ConfigError || e instanceof UsageError) {
    process.stderr.write(`outpost: ${e.message}\n`);
    return 2;
  }
  if (e instanceof UserExistsError || e instanceof UserNotFoundError || e instanceof KeyNotFoundError) {
    process.stderr.write(`outpost: ${e.message}\n`);
    return 1;
  }
  // operators get the message; the stack only when they ask for debug logs
  const detail = e instanceof Error ? (process.env.OUTPOST_LOG === "debug" ? (e.stack ?? e.message) : e.message) : String(e);
  process.stderr.write(`outpost: ${detail}\n`);
  return 1;
}
