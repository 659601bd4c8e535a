/**
 * @module cli/queue — `outpost queue list|show` (Postfix mailq, postcat -q) and the dispatch of
 * `retry|hold|release|delete|flush` to cli/queue-admin.ts. Works on the database directly, so it also works while
 * `serve` is stopped; a running server sees a change the next time its scheduler looks at the queue.
 */
import { UsageError } from "../mail/errors.ts";
import type { Rate } from "../config/schema.ts";
import { readThrottleSnapshot } from "../delivery/service.ts";
import type { DestinationSnapshot } from "../delivery/throttle.ts";
import type { UserId } from "../mail/ids.ts";
import type { AdminAction } from "../queue/admin.ts";
import { isHeld, isInFlight, isPending, messageJson, QueueInspector, type MessageView, type PendingCounts, type RecipientView } from "../queue/inspect.ts";
import { parseArgs, showUsage, type ParsedArgs } from "./args.ts";
import { isoTime, StdoutWriter, StreamedTable, table } from "./output.ts";
import { openContext, print, printJson } from "./context.ts";
import { ADMIN_ACTIONS, FILTER_FLAGS, parseTarget, plural, runAdmin, userNames } from "./queue-admin.ts";

/** Text is for reading, so it stops at a readable default; a script asking for JSON gets everything. */
const DEFAULT_TEXT_LIMIT = 1000;

export const QUEUE_USAGE = `usage:
  outpost queue list [--limit N] [--json]   pending and held recipients, grouped by message, oldest first (like
                                     mailq); at most N messages: text defaults to ${DEFAULT_TEXT_LIMIT}, --json to all; 0 means all
  outpost queue show ID [--json]     one message, its owner and all its recipients
  outpost queue show ID --headers|--body   the stored message's header block or body, raw (like postcat -hq/-bq)
  outpost queue retry TARGET [--json]      make waiting recipients due now (like postqueue -i / -f)
  outpost queue hold TARGET [--json]       never deliver them until released (like postsuper -h)
  outpost queue release TARGET [--json]    deliver held recipients again, due now (like postsuper -H)
  outpost queue delete TARGET [--json]     remove them; a message id removes the whole message (like postsuper -d)
  outpost queue flush [--json]       same as retry --all
TARGET is a message id (its recipients), a recipient id (that one), or --all (every pending or held recipient),
narrowed by any of:
  --sender ADDR|@DOMAIN|'<>'   envelope sender     --domain D        recipient domain
  --status queued|deferred|held                    --older-than T    queued at least T ago (30m, 2h, 5d)
common: --config FILE`;

const VIEWS = ["list", "show"];

export async function queueCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { booleans: ["all", "headers", "body"], values: ["limit", ...FILTER_FLAGS] });
  const [sub, id, ...rest] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(QUEUE_USAGE, args.flags.has("help"));
  if (![...VIEWS, ...ADMIN_ACTIONS, "flush"].includes(sub)) throw new UsageError(`unknown command queue ${sub}\n${QUEUE_USAGE}`);
  if (rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`);
  checkOptions(sub, args);
  const json = args.flags.has("json");
  if (sub === "show" && !id) throw new UsageError("queue show needs a message id");
  if (sub === "list" && id) throw new UsageError(`unexpected argument ${id}`);
  const target = VIEWS.includes(sub) ? null : parseTarget(sub as AdminAction | "flush", id, args);
  const limit = parseLimit(args.values.limit, json);
  const { store, config } = openContext(args);
  try {
    if (target) {
      const action = sub === "flush" ? "retry" : (sub as AdminAction);
      return runAdmin({ action, command: sub as AdminAction | "flush", target, json, argv: ["queue", ...argv] }, store, config);
    }
    const inspector = new QueueInspector(store.sqlite);
    const owner = userNames(store.db);
    if (sub === "list") {
      // one read transaction: the totals and the listing describe the same queue while serve keeps working on it
      return store.sqlite.transaction(() => list(inspector, owner, limit, json, config.data_dir))();
    }
    const part = args.flags.has("headers") || args.flags.has("body") ? { headers: args.flags.has("headers"), body: args.flags.has("body") } : null;
    if (part) return showStored(inspector, id!, part);
    const m = inspector.getMessage(id!);
    if (!m) return unknown(id!);
    if (json) printJson({ ...messageJson(m, Date.now()), user: owner(m.userId) });
    else print(showText(m, owner(m.userId)));
    return 0;
  } finally {
    store.close();
  }
}

/** Options that belong to another subcommand are usage errors, not silently ignored. */
function checkOptions(sub: string, args: ParsedArgs): void {
  if (sub !== "list" && args.values.limit !== undefined) throw new UsageError("--limit applies to queue list only");
  for (const flag of ["headers", "body"]) {
    if (!args.flags.has(flag)) continue;
    if (sub !== "show") throw new UsageError(`--${flag} applies to queue show only`);
    if (args.flags.has("json")) throw new UsageError(`--${flag} prints the stored message as it is; it does not go with --json`);
  }
  if (VIEWS.includes(sub)) {
    const stray = args.flags.has("all") ? "all" : FILTER_FLAGS.find((f) => args.values[f] !== undefined);
    if (stray) throw new UsageError(`--${stray} applies to queue ${ADMIN_ACTIONS.join("|")} only`);
  }
}

/**
 * `show --headers` / `--body` (postcat -hq / -bq): the stored bytes as they are, the header block up to and
 * including its last line's CRLF, the body after the blank line; both flags print the whole message. So
 * `--headers`, a CRLF, and `--body` put together are the stored message, byte for byte.
 */
function showStored(inspector: QueueInspector, id: string, part: { headers: boolean; body: boolean }): number {
  const raw = inspector.storedMessage(id);
  if (!raw) return unknown(id);
  // the empty line that ends the header block; none: the message is all header (as message/headers.ts splits it)
  const blank = raw.indexOf("\r\n\r\n");
  const header = blank < 0 ? raw : raw.subarray(0, blank + 2);
  const body = blank < 0 ? Buffer.alloc(0) : raw.subarray(blank + 4);
  const out = new StdoutWriter();
  out.write(part.headers && part.body ? raw : part.headers ? header : body);
  out.flush();
  return 0;
}

/** The most messages `queue list` prints; 0 means no limit. */
function parseLimit(value: string | undefined, json: boolean): number {
  if (value === undefined) return json ? 0 : DEFAULT_TEXT_LIMIT;
  if (!/^\d+$/.test(value)) throw new UsageError(`--limit must be a whole number (0 for all), not ${JSON.stringify(value)}`);
  return Number(value);
}

function unknown(id: string): number {
  process.stderr.write(`outpost: no message ${id} in the queue\n`);
  return 1;
}

type OwnerName = (id: UserId | null) => string | null;

function list(inspector: QueueInspector, owner: OwnerName, limit: number, json: boolean, dataDir: string): number {
  const out = new StdoutWriter();
  try {
    const totals = inspector.pendingCounts();
    const messages = firstN(inspector.pending(), limit);
    if (json) listJson(out, messages, owner, totals, throttleJson(dataDir, Date.now()));
    else {
      listText(out, messages, owner, totals);
      printThrottle(out, dataDir);
    }
  } finally {
    out.flush();
  }
  return 0;
}

/** At most `limit` items (0: all); stopping early closes the source, which resets its statement. */
function* firstN<T>(items: Iterable<T>, limit: number): Generator<T, void, undefined> {
  if (limit === 0) return yield* items;
  let n = 0;
  for (const item of items) {
    yield item;
    if (++n >= limit) return;
  }
}

const LIST_HEADER = ["MESSAGE", "AGE", "SIZE", "USER", "SENDER", "RECIPIENT", "STATUS", "TRIES", "NEXT ATTEMPT", "LAST REPLY"];

function listText(out: StdoutWriter, messages: Iterable<MessageView>, owner: OwnerName, totals: PendingCounts): void {
  if (totals.messages === 0) {
    out.line("queue is empty");
    return;
  }
  const now = Date.now();
  const rows = new StreamedTable(LIST_HEADER, out);
  let shown = { messages: 0, recipients: 0 };
  for (const m of messages) {
    m.recipients.forEach((r, i) => {
      const head = i === 0 ? [m.id, age(now - m.createdAt), size(m.size), owner(m.userId) ?? "-", sender(m.envelopeFrom)] : ["", "", "", "", ""];
      rows.push([...head, r.address, state(r, now), String(r.attempts), next(r, now), clip(r.lastReply ?? "-", 70)]);
    });
    shown = { messages: shown.messages + 1, recipients: shown.recipients + m.recipients.length };
  }
  rows.end();
  const more = { messages: totals.messages - shown.messages, recipients: totals.recipients - shown.recipients };
  if (more.messages > 0) {
    out.line(`… and ${plural(more.messages, "more message")} (${plural(more.recipients, "recipient")}) not shown; --limit 0 lists all`);
  }
  const held = totals.held > 0 ? ` (${totals.held} held)` : "";
  out.line(`-- ${plural(totals.messages, "message")}, ${plural(totals.recipients, "recipient")} pending${held}`);
}

/**
 * One JSON document, written as it is read: `{"messages": [...], "more": N, "total": {...}, "throttle": ...}`,
 * one message per line. A single document rather than JSON lines so `jq .messages[]` and JSON.parse work.
 */
function listJson(out: StdoutWriter, messages: Iterable<MessageView>, owner: OwnerName, totals: PendingCounts, throttle: ThrottleJson | null): void {
  const now = Date.now();
  out.write(`{\n  "messages": [`);
  let shown = 0;
  for (const m of messages) {
    out.write(`${shown === 0 ? "\n" : ",\n"}    ${JSON.stringify({ ...messageJson(m, now), user: owner(m.userId) })}`);
    shown++;
  }
  out.line(`${shown === 0 ? "" : "\n  "}],`);
  out.line(`  "more": ${totals.messages - shown},`);
  out.line(`  "total": ${JSON.stringify(totals)},`);
  out.line(`  "throttle": ${JSON.stringify(throttle)}\n}`);
}

/** How long a published throttle snapshot stays believable (`serve` writes one every 5 s). */
const THROTTLE_FRESH_MS = 30_000;

type PublishedThrottle = NonNullable<ReturnType<typeof readThrottleSnapshot>>;

/** The running server's throttle state (data_dir/throttle.json, published by delivery/service.ts), if fresh. */
function freshThrottle(dataDir: string, now: number): PublishedThrottle | null {
  const snap = readThrottleSnapshot(dataDir);
  return snap && now - snap.time <= THROTTLE_FRESH_MS ? snap : null;
}

/** The destinations worth showing: not at full speed, or with connections open. */
const notable = (snap: PublishedThrottle) =>
  snap.destinations.filter((d) => d.inUse > 0 || d.limit < d.max || d.backoffUntil || d.dead);

/** The throttle state below the text listing. Printed only when it is fresh. */
function printThrottle(out: StdoutWriter, dataDir: string): void {
  const now = Date.now();
  const snap = freshThrottle(dataDir, now);
  if (!snap) return;
  const shown = notable(snap);
  out.line("");
  out.line(`delivery: ${snap.inUse} of ${snap.concurrency} connections in use (published by serve ${age(now - snap.time)} ago)`);
  if (shown.length === 0) return;
  out.line(table([
    ["DESTINATION", "CONNECTIONS", "WINDOW", "RATE", "STATE"],
    ...shown.map((d) => [d.key, String(d.inUse), `${d.limit}/${d.max}`, rate(d.rate), destState(d, now)]),
  ]));
}

/** The same throttle state as the text listing shows, under snake_case names; null when serve published none lately. */
interface ThrottleJson {
  /** RFC 3339, when serve wrote it */
  published_at: string;
  concurrency: number;
  in_use: number;
  destinations: {
    destination: string;
    connections: number;
    window: number;
    max_window: number;
    rate: { count: number; per_ms: number } | null;
    state: "dead" | "backing_off" | "recovering" | "ok";
    backoff_until: string | null;
    dead_until: string | null;
    consecutive_failures: number;
  }[];
}

function throttleJson(dataDir: string, now: number): ThrottleJson | null {
  const snap = freshThrottle(dataDir, now);
  if (!snap) return null;
  const iso = (ms: number | null) => (ms ? new Date(ms).toISOString() : null);
  return {
    published_at: new Date(snap.time).toISOString(),
    concurrency: snap.concurrency,
    in_use: snap.inUse,
    destinations: notable(snap).map((d) => ({
      destination: d.key,
      connections: d.inUse,
      window: d.limit,
      max_window: d.max,
      rate: d.rate && { count: d.rate.count, per_ms: d.rate.perMs },
      state: destStateName(d, now),
      backoff_until: iso(d.backoffUntil),
      dead_until: iso(d.deadUntil),
      consecutive_failures: d.consecutiveFailures,
    })),
  };
}

function destStateName(d: DestinationSnapshot, now: number): ThrottleJson["destinations"][number]["state"] {
  if (d.dead) return "dead";
  if (d.backoffUntil && d.backoffUntil > now) return "backing_off";
  return d.limit < d.max ? "recovering" : "ok";
}

function destState(d: DestinationSnapshot, now: number): string {
  const name = destStateName(d, now);
  if (name === "dead") return `dead until ${isoTime(d.deadUntil)} (${d.consecutiveFailures} failed connections)`;
  if (name === "backing_off") return `backing off until ${isoTime(d.backoffUntil)}`;
  return name;
}

function rate(r: Rate | null): string {
  if (!r) return "unlimited";
  const unit = r.perMs === 1000 ? "s" : r.perMs === 60_000 ? "min" : r.perMs === 3_600_000 ? "h" : `${r.perMs}ms`;
  return `${Math.round(r.count * 10) / 10}/${unit}`;
}

function showText(m: MessageView, owner: string | null): string {
  const now = Date.now();
  const options = Object.entries(m.options).filter(([, on]) => on).map(([k]) => k);
  const head = table([
    ["id:", m.id],
    ["created:", `${isoTime(m.createdAt)} (${age(now - m.createdAt)} ago)`],
    ["sender:", sender(m.envelopeFrom)],
    ["subject:", m.subject || "-"],
    ["size:", `${m.size} bytes`],
    ["source:", m.source],
    ["user:", owner ?? "-"],
    ["options:", options.length ? options.join(", ") : "-"],
  ]);
  const rcpts = table([
    ["RECIPIENT", "ID", "STATUS", "TRIES", "NEXT ATTEMPT", "LAST MX", "LAST REPLY"],
    ...m.recipients.map((r) => [r.address, r.id, state(r, now), String(r.attempts), next(r, now), r.lastMx ?? "-", r.lastReply ?? "-"]),
  ]);
  return `${head}\n\n${rcpts}`;
}

/** "sending" while a delivery attempt holds the recipient's lease; "held" as it is (the API says deferred). */
function state(r: RecipientView, now: number): string {
  return isInFlight(r, now) ? "sending" : r.status;
}

/** A held recipient has no next attempt until it is released. */
function next(r: RecipientView, now: number): string {
  if (isHeld(r)) return "on hold";
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
