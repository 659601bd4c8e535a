/**
 * @module cli/queue-admin — `outpost queue retry|hold|release|delete ID | --all [filters]` and `queue flush`
 * (Postfix postqueue -i/-f, postsuper -h/-H/-d): the target and filters from argv, the change (queue/admin.ts),
 * what to print, and one log line per message changed, naming the operator, the command line and the owner.
 */
import { getUser } from "../auth/users.ts";
import type { Config } from "../config/schema.ts";
import { parseDuration } from "../config/units.ts";
import type { Db, Store } from "../db/client.ts";
import { parseAddress } from "../mail/address.ts";
import { UsageError } from "../mail/errors.ts";
import type { UserId } from "../mail/ids.ts";
import { createLogger } from "../observe/log.ts";
import { ACTS_ON, OPEN_STATUSES, QueueAdmin, type AdminAction, type AdminResult, type AffectedMessage, type OpenStatus, type QueueFilter, type Target } from "../queue/admin.ts";
import type { ParsedArgs } from "./args.ts";
import { print, printJson } from "./context.ts";
import { StdoutWriter } from "./output.ts";

export const ADMIN_ACTIONS: readonly AdminAction[] = ["retry", "hold", "release", "delete"];
export const FILTER_FLAGS = ["sender", "domain", "status", "older-than"] as const;

/**
 * The target an admin command's arguments name: an ID, or `--all` narrowed by the filters. Filters without
 * `--all`, or an ID with `--all`, are usage errors: a filter must never be mistaken for a narrowing of one ID.
 */
export function parseTarget(action: AdminAction | "flush", id: string | undefined, args: ParsedArgs): { id: string } | { filter: QueueFilter } {
  const given = FILTER_FLAGS.filter((f) => args.values[f] !== undefined);
  const all = args.flags.has("all");
  if (action === "flush") {
    if (id || all || given.length) throw new UsageError(`queue flush takes no ${id ? `argument ${id}` : all ? "--all" : `--${given[0]}`}; it is retry --all`);
    return { filter: {} };
  }
  if (id && all) throw new UsageError(`queue ${action}: give a message or recipient id or --all, not both`);
  if (given.length && !all) throw new UsageError(`--${given[0]} narrows --all: queue ${action} --all --${given[0]} …${id ? ` (it does not apply to an id)` : ""}`);
  if (!id && !all) throw new UsageError(`queue ${action} needs a message id, a recipient id, or --all`);
  return id ? { id } : { filter: parseFilter(action, args) };
}

function parseFilter(action: AdminAction, args: ParsedArgs): QueueFilter {
  const { sender, domain, status, "older-than": olderThan } = args.values;
  const filter: QueueFilter = {};
  if (sender !== undefined) filter.sender = parseSender(sender);
  if (domain !== undefined) filter.domain = parseDomainArg("--domain", domain);
  if (status !== undefined) filter.status = parseStatus(action, status);
  if (olderThan !== undefined) filter.olderThanMs = parseOr("--older-than", () => parseDuration(olderThan));
  return filter;
}

function parseOr<T>(flag: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

/**
 * An address (its comparison key: stored senders are canonical, compared case-insensitively), "@domain" for every
 * sender there, or "<>" (also "") for the null sender of bounces.
 */
function parseSender(text: string): string {
  if (text === "<>" || text === "") return "";
  if (text.startsWith("@")) return "@" + parseDomainArg("--sender", text.slice(1));
  // the queue holds canonical forms; the filter compares lower-cased, i.e. by the address's key (mail/address.ts)
  const p = parseAddress(text);
  if (!p.ok) throw new UsageError(`--sender: expected an address, @domain or <>, not ${JSON.stringify(text)} (${p.reason})`);
  return p.key;
}

/** A domain in the form addresses are stored in (lower case, A-labels), as mail/address.ts writes it. */
function parseDomainArg(flag: string, text: string): string {
  const p = text.includes("@") ? null : parseAddress(`postmaster@${text}`);
  if (!p?.ok) throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a domain`);
  return p.domain;
}

function parseStatus(action: AdminAction, text: string): OpenStatus {
  const status = OPEN_STATUSES.find((s) => s === text);
  if (!status) throw new UsageError(`--status must be one of ${OPEN_STATUSES.join(", ")}, not ${JSON.stringify(text)}`);
  if (!ACTS_ON[action].includes(status)) {
    throw new UsageError(`--status ${status}: queue ${action} acts on ${ACTS_ON[action].join(" and ")} recipients only`);
  }
  return status;
}

export interface AdminRun {
  action: AdminAction;
  /** "flush" prints like retry --all */
  command: AdminAction | "flush";
  target: { id: string } | { filter: QueueFilter };
  json: boolean;
  /** the command line after `outpost`, for the log */
  argv: string[];
}

/** Runs one admin command against the open store. Exit 1 when an id names nothing in the queue. */
export function runAdmin(run: AdminRun, store: Store, config: Config): number {
  const admin = new QueueAdmin(store.sqlite);
  let target: Target;
  if ("id" in run.target) {
    const found = admin.resolve(run.target.id);
    if (!found) {
      process.stderr.write(`outpost: no message or recipient ${run.target.id} in the queue\n`);
      return 1;
    }
    target = found;
  } else target = { kind: "all", filter: run.target.filter };
  const audit = auditLog(run, store.db, config);
  let result: AdminResult;
  try {
    result = admin.apply(run.action, target, audit.committed);
  } finally {
    audit.close();
  }
  report(run, target, result);
  return 0;
}

/**
 * One info line per message changed, written to stderr (stdout carries the command's output, and with --json
 * must stay one JSON document) after the batch that changed it committed, so the log never claims a change that
 * was rolled back. Like postsuper's "QUEUEID: removed" lines, with who did it and how.
 */
function auditLog(run: AdminRun, db: Db, config: Config): { committed: (batch: AffectedMessage[]) => void; close: () => void } {
  const err = new StdoutWriter(2);
  const log = createLogger(config.log_level, (line) => err.line(line));
  const name = userNames(db);
  let who: ReturnType<typeof operator> | undefined;
  return {
    committed: (batch) => {
      who ??= operator(); // a command that changes nothing logs nothing, and need not ask
      for (const m of batch) {
        log.info(`queue_${run.action}`, {
          queue_id: m.id,
          user: name(m.userId),
          recipients: m.recipients,
          ...(run.action === "delete" ? { message_deleted: m.messageDeleted } : {}),
          argv: ["outpost", ...run.argv],
          ...who,
        });
      }
      err.flush();
    },
    close: () => err.flush(),
  };
}

/**
 * The operator by the name the passwd database (NSS) gives the effective uid, asked of id(1): Bun's
 * os.userInfo() reports $USER instead, or "unknown" (oven-sh/bun#39859), and $USER is whatever the caller set.
 * A uid without a name shows as "uid N". With sudo, also who ran it.
 */
function operator(): { operator: string; sudo_user?: string } {
  const id = Bun.spawnSync(["id", "-un"], { stdout: "pipe", stderr: "ignore" });
  const name = (id.exitCode === 0 && id.stdout.toString().trim()) || `uid ${process.geteuid?.() ?? "?"}`;
  const sudo = process.env.SUDO_USER;
  return sudo ? { operator: name, sudo_user: sudo } : { operator: name };
}

/**
 * A message owner's name, through auth's functions (auth owns the users table); looked up once per user. A user
 * removed since shows as "#ID"; no owner (trusted network, our own DSNs) is null.
 */
export function userNames(db: Db): (id: UserId | null) => string | null {
  const cache = new Map<UserId, string>();
  return (id) => {
    if (id === null) return null;
    let name = cache.get(id);
    if (name === undefined) cache.set(id, (name = getUser(db, id)?.name ?? `#${id}`));
    return name;
  };
}

const DONE: Record<AdminAction, string> = {
  retry: "scheduled for immediate delivery",
  hold: "held",
  release: "released for immediate delivery",
  delete: "deleted",
};

function report(run: AdminRun, target: Target, r: AdminResult): void {
  const id = "id" in run.target ? run.target.id : undefined;
  if (run.json) {
    printJson({
      ...(id ? { id } : {}),
      action: run.command,
      messages: r.messages,
      recipients: r.recipients,
      ...(run.action === "retry" || run.action === "hold" ? { in_flight: r.inFlight } : {}),
      ...(run.action === "delete" ? { messages_deleted: r.messagesDeleted } : {}),
    });
    return;
  }
  if (run.action === "delete" && target.kind === "message") {
    print(`${id}: deleted with its ${plural(r.recipients, "recipient")}`);
    return;
  }
  let line = `${id ? `${id}: ` : ""}${plural(r.recipients, "recipient")} of ${plural(r.messages, "message")} ${DONE[run.action]}`;
  if (run.action === "delete" && r.messagesDeleted > 0) line += `; ${plural(r.messagesDeleted, "message")} removed with ${r.messagesDeleted === 1 ? "its" : "their"} last recipient`;
  if (r.inFlight > 0) line += `; ${plural(r.inFlight, "recipient")} in flight left alone${run.action === "hold" ? " (hold again once the attempt is over)" : ""}`;
  print(line);
}

export const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
