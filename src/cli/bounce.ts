/**
 * @module cli/bounce — `outpost bounce list|show`: the mail kept at the bounce domain (postmaster, abuse, reports
 * that could not be parsed or matched), for an operator to read. Works on the database, with or without `serve`.
 */
import { InboundStore, type KeptMail, type KeptMailWithRaw } from "../bounce/inbound.ts";
import { UsageError } from "../mail/errors.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { openContext, print, printJson } from "./context.ts";
import { isoTime, StdoutWriter, table } from "./output.ts";

const DEFAULT_TEXT_LIMIT = 100;

export const BOUNCE_USAGE = `usage:
  outpost bounce list [--limit N] [--json]   mail kept at the bounce domain, newest first
                                     (postmaster@, abuse@, reports that could not be parsed or matched);
                                     text shows ${DEFAULT_TEXT_LIMIT} by default, --json all; 0 means all
  outpost bounce show ID [--json]    the kept message as received (--json: its details and the message)
common: --config FILE`;

const ARITY: Record<string, number> = { list: 1, show: 2 };

export async function bounceCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ["limit"] });
  const [sub, id] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(BOUNCE_USAGE, args.flags.has("help"));
  if (!(sub in ARITY)) throw new UsageError(`unknown command bounce ${sub}\n${BOUNCE_USAGE}`);
  expectPositionals(args, ARITY[sub]!, BOUNCE_USAGE);
  if (sub === "show" && !id) throw new UsageError(`bounce show needs an id (see outpost bounce list)`);
  if (sub !== "list" && args.values.limit !== undefined) throw new UsageError("--limit applies to bounce list only");
  const json = args.flags.has("json");
  const limit = parseLimit(args.values.limit, json);
  const { store } = openContext(args);
  try {
    const kept = new InboundStore(store.sqlite);
    if (sub === "list") return list(kept.list(limit), json);
    const m = kept.get(id!);
    if (!m) {
      process.stderr.write(`outpost: no kept message ${id} at the bounce domain\n`);
      return 1;
    }
    if (json) printJson({ ...keptJson(m), raw: m.raw.toString("utf8"), raw_base64: m.raw.toString("base64") });
    else writeRaw(m);
    return 0;
  } finally {
    store.close();
  }
}

function parseLimit(value: string | undefined, json: boolean): number {
  if (value === undefined) return json ? 0 : DEFAULT_TEXT_LIMIT;
  if (!/^\d+$/.test(value)) throw new UsageError(`--limit must be a whole number (0 for all), not ${JSON.stringify(value)}`);
  return Number(value);
}

function keptJson(m: KeptMail) {
  return {
    id: m.id, received_at: new Date(m.receivedAt).toISOString(), kind: m.kind, rcpt: m.rcpt,
    mail_from: m.mailFrom, client_ip: m.clientIp, size: m.size, reason: m.reason,
  };
}

function list(rows: KeptMail[], json: boolean): number {
  if (json) {
    printJson(rows.map(keptJson));
    return 0;
  }
  if (rows.length === 0) {
    print("nothing kept at the bounce domain");
    return 0;
  }
  print(table([
    ["ID", "RECEIVED", "KIND", "FROM", "RCPT", "CLIENT", "SIZE", "REASON"],
    ...rows.map((m) => [m.id, isoTime(m.receivedAt), m.kind, m.mailFrom === "" ? "<>" : m.mailFrom, m.rcpt, m.clientIp, String(m.size), m.reason]),
  ]));
  return 0;
}

/** The stored message byte for byte (CRLF line ends, as SMTP intake writes them), so `> report.eml` keeps it. */
function writeRaw(m: KeptMailWithRaw): void {
  const out = new StdoutWriter();
  out.write(m.raw);
  out.flush();
}
