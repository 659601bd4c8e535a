/**
 * @module cli/queue — `outpost queue list|show|retry|delete|flush` (Postfix mailq, postqueue -f, postsuper -d).
 * Works on the database directly, so it also works while `serve` is stopped; a running server sees a retry the
 * next time its scheduler looks at the queue.
 */
import { UsageError } from "../mail/errors.ts";
import type { Rate } from "../config/schema.ts";
import { readThrottleSnapshot } from "../delivery/service.ts";
import type { DestinationSnapshot } from "../delivery/throttle.ts";
import { QueueAdmin } from "../queue/admin.ts";
import { isInFlight, isPending, messageJson, QueueInspector, type MessageView, type RecipientView } from "../queue/inspect.ts";
import { isoTime, parseArgs, table } from "./args.ts";
import { openContext, print, printJson } from "./context.ts";

export const QUEUE_USAGE = `usage:
  outpost queue list [--json]        pending recipients, grouped by message (like mailq)
  outpost queue show ID [--json]     one message and all its recipients
  outpost queue retry ID|--all       make waiting recipients due now (like postqueue -i / -f)
  outpost queue delete ID            remove a message and its recipients (like postsuper -d)
  outpost queue flush                same as retry --all
common: --config FILE`;

export async function queueCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { booleans: ["all"] });
  const [sub, id, ...rest] = args.positionals;
  if (args.flags.has("help") || !sub) {
    print(QUEUE_USAGE);
    return args.flags.has("help") ? 0 : 2;
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`);
  const wantsId = sub === "show" || sub === "delete" || (sub === "retry" && !args.flags.has("all"));
  if (wantsId && !id) throw new UsageError(`queue ${sub} needs a message id${sub === "retry" ? " or --all" : ""}`);
  if (!wantsId && id) throw new UsageError(`unexpected argument ${id}`);
  if (!["list", "show", "retry", "delete", "flush"].includes(sub)) throw new UsageError(`unknown command queue ${sub}\n${QUEUE_USAGE}`);
  const { store, config } = openContext(args);
  try {
    const admin = new QueueAdmin(store.sqlite);
    const inspector = new QueueInspector(store.sqlite);
    const json = args.flags.has("json");
    switch (sub) {
      case "list": {
        const code = list(inspector.listPending(), json);
        if (!json) printThrottle(config.data_dir);
        return code;
      }
      case "show": {
        const m = inspector.getMessage(id!);
        if (!m) return unknown(id!);
        if (json) printJson(messageJson(m, Date.now()));
        else print(showText(m));
        return 0;
      }
      case "retry": {
        if (args.flags.has("all")) return flushed(admin.retryAll());
        const n = admin.retry(id!);
        if (n === null) return unknown(id!);
        print(`${id}: ${plural(n, "recipient")} scheduled for immediate delivery`);
        return 0;
      }
      case "delete":
        if (!admin.delete(id!)) return unknown(id!);
        print(`${id}: deleted`);
        return 0;
      default: // flush
        return flushed(admin.retryAll());
    }
  } finally {
    store.close();
  }
}

function unknown(id: string): number {
  process.stderr.write(`outpost: no message ${id} in the queue\n`);
  return 1;
}

function flushed(n: number): number {
  print(`${plural(n, "recipient")} scheduled for immediate delivery`);
  return 0;
}

function list(messages: MessageView[], json: boolean): number {
  if (json) {
    printJson(messages.map((m) => messageJson(m, Date.now())));
    return 0;
  }
  if (messages.length === 0) {
    print("queue is empty");
    return 0;
  }
  const now = Date.now();
  const rows = [["MESSAGE", "AGE", "SIZE", "SENDER", "RECIPIENT", "STATUS", "TRIES", "NEXT ATTEMPT", "LAST REPLY"]];
  let count = 0;
  for (const m of messages) {
    m.recipients.forEach((r, i) => {
      const head = i === 0 ? [m.id, age(now - m.createdAt), size(m.size), sender(m.envelopeFrom)] : ["", "", "", ""];
      rows.push([...head, r.address, state(r, now), String(r.attempts), next(r, now), clip(r.lastReply ?? "-", 70)]);
      count++;
    });
  }
  print(table(rows));
  print(`-- ${plural(messages.length, "message")}, ${plural(count, "recipient")} pending`);
  return 0;
}

/** How long a published throttle snapshot stays believable (`serve` writes one every 5 s). */
const THROTTLE_FRESH_MS = 30_000;

/**
 * The running server's throttle state (data_dir/throttle.json, published by delivery/service.ts), for the
 * destinations that are not at full speed or have connections open. Printed only when it is fresh.
 */
function printThrottle(dataDir: string): void {
  const snap = readThrottleSnapshot(dataDir);
  const now = Date.now();
  if (!snap || now - snap.time > THROTTLE_FRESH_MS) return;
  const shown = snap.destinations.filter((d) => d.inUse > 0 || d.limit < d.max || d.backoffUntil || d.dead);
  print("");
  print(`delivery: ${snap.inUse} of ${snap.concurrency} connections in use (published by serve ${age(now - snap.time)} ago)`);
  if (shown.length === 0) return;
  print(table([
    ["DESTINATION", "CONNECTIONS", "WINDOW", "RATE", "STATE"],
    ...shown.map((d) => [d.key, String(d.inUse), `${d.limit}/${d.max}`, rate(d.rate), destState(d, now)]),
  ]));
}

function destState(d: DestinationSnapshot, now: number): string {
  if (d.dead) return `dead until ${isoTime(d.deadUntil)} (${d.consecutiveFailures} failed connections)`;
  if (d.backoffUntil && d.backoffUntil > now) return `backing off until ${isoTime(d.backoffUntil)}`;
  return d.limit < d.max ? "recovering" : "ok";
}

function rate(r: Rate | null): string {
  if (!r) return "unlimited";
  const unit = r.perMs === 1000 ? "s" : r.perMs === 60_000 ? "min" : r.perMs === 3_600_000 ? "h" : `${r.perMs}ms`;
  return `${Math.round(r.count * 10) / 10}/${unit}`;
}

function showText(m: MessageView): string {
  const now = Date.now();
  const options = Object.entries(m.options).filter(([, on]) => on).map(([k]) => k);
  const head = table([
    ["id:", m.id],
    ["created:", `${isoTime(m.createdAt)} (${age(now - m.createdAt)} ago)`],
    ["sender:", sender(m.envelopeFrom)],
    ["subject:", m.subject || "-"],
    ["size:", `${m.size} bytes`],
    ["source:", m.source],
    ["user id:", m.userId === null ? "-" : String(m.userId)],
    ["options:", options.length ? options.join(", ") : "-"],
  ]);
  const rcpts = table([
    ["RECIPIENT", "ID", "STATUS", "TRIES", "NEXT ATTEMPT", "LAST MX", "LAST REPLY"],
    ...m.recipients.map((r) => [r.address, r.id, state(r, now), String(r.attempts), next(r, now), r.lastMx ?? "-", r.lastReply ?? "-"]),
  ]);
  return `${head}\n\n${rcpts}`;
}

/** "sending" while a delivery attempt holds the recipient's lease. */
function state(r: RecipientView, now: number): string {
  return isInFlight(r, now) ? "sending" : r.status;
}

function next(r: RecipientView, now: number): string {
  if (!isPending(r) || isInFlight(r, now)) return "-";
  return r.nextAttemptAt <= now ? "now" : isoTime(r.nextAttemptAt);
}

const sender = (s: string) => (s === "" ? "<>" : s);

function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)}KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)}MB`;
}

const clip = (s: string, n: number) => (s.length > n ? s.slice(0, n - 1) + "…" : s);
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
