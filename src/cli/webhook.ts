/**
 * @module cli/webhook — `outpost webhook list|test|retry`: each hook's outbox at a glance, a signed sample POST to
 * check a receiver, and sending a hook's failed events again now. Works on the database, with or without `serve`.
 */
import { randomBytes } from "node:crypto";
import { loadConfig } from "../config/load.ts";
import type { Config, WebhookConfig } from "../config/schema.ts";
import { Outbox, type HookSummary } from "../events/outbox.ts";
import type { EventJson } from "../events/query.ts";
import { describeFailure, postWebhook, signRequest } from "../events/webhook-post.ts";
import { UsageError } from "../mail/errors.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { openContext, print, printJson } from "./context.ts";
import { isoTime, table } from "./output.ts";

export const WEBHOOK_USAGE = `usage:
  outpost webhook list [--json]       each hook: its URL, events waiting, expired, failing since, last error
  outpost webhook test NAME|URL [--secret S]
                                      POST a signed sample event and print the receiver's status and body;
                                      a URL signs with the secret of the hook that has it, or with --secret S
  outpost webhook retry NAME          the hook's expired and orphaned events start again, and events waiting
                                      after a failure are due now (sent by the running serve, or the next one)
common: --config FILE`;

const ARITY: Record<string, number> = { list: 1, test: 2, retry: 2 };

export async function webhookCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ["secret"] });
  const [sub, target] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(WEBHOOK_USAGE, args.flags.has("help"));
  if (!(sub in ARITY)) throw new UsageError(`unknown command webhook ${sub}\n${WEBHOOK_USAGE}`);
  expectPositionals(args, ARITY[sub]!, WEBHOOK_USAGE);
  if (sub !== "list" && !target) throw new UsageError(`webhook ${sub} needs a hook's NAME${sub === "test" ? " or a URL" : ""} (see outpost webhook list)`);
  if (sub !== "test" && args.values.secret !== undefined) throw new UsageError("--secret applies to webhook test URL only");
  if (sub === "test") return test(loadConfig(args.values.config), target!, args.values.secret);
  const { config, store } = openContext(args);
  try {
    const outbox = new Outbox(store.sqlite);
    if (sub === "list") return list(config, outbox.summary(), args.flags.has("json"));
    const hook = config.webhook.find((h) => h.name === target);
    if (!hook) return noHook(config, target!);
    const n = outbox.retryHook(hook.name, Date.now());
    print(n === 0 ? `nothing to retry for hook ${hook.name}` : `${n} event(s) of hook ${hook.name} due now`);
    return 0;
  } finally {
    store.close();
  }
}

function noHook(config: Config, name: string): number {
  const names = config.webhook.map((h) => h.name);
  process.stderr.write(`outpost: no [[webhook]] named ${name} in ${config.file ?? "the built-in defaults"}${names.length ? ` (hooks: ${names.join(", ")})` : ""}\n`);
  return 1;
}

interface Listed {
  name: string;
  url: string;
  user: string;
  events: readonly string[];
  configured: boolean;
  summary: HookSummary | undefined;
}

/** The configured hooks, then any other name with rows (a hook removed from the config). */
function list(config: Config, summaries: HookSummary[], json: boolean): number {
  const byName = new Map(summaries.map((s) => [s.hook, s]));
  const hooks: Listed[] = [
    ...config.webhook.map((h) => ({ name: h.name, url: h.url, user: h.user, events: h.events, configured: true, summary: byName.get(h.name) })),
    ...summaries
      .filter((s) => !config.webhook.some((h) => h.name === s.hook))
      .map((s) => ({ name: s.hook === "" ? "(unnamed)" : s.hook, url: s.url, user: "", events: [], configured: false, summary: s })),
  ];
  if (json) {
    printJson(hooks.map((h) => ({
      name: h.name, url: h.url, user: h.user, events: h.events, configured: h.configured,
      pending: h.summary?.pending ?? 0, delivered: h.summary?.delivered ?? 0, expired: h.summary?.expired ?? 0, orphaned: h.summary?.orphaned ?? 0,
      failing_since: iso(h.summary?.failingSince), last_error: h.summary?.lastError ?? null, last_error_at: iso(h.summary?.lastErrorAt),
    })));
    return 0;
  }
  if (hooks.length === 0) {
    print("no webhooks configured ([[webhook]] in the config)");
    return 0;
  }
  print(table([
    ["NAME", "URL", "PENDING", "EXPIRED", "ORPHANED", "FAILING SINCE", "LAST ERROR"],
    ...hooks.map((h) => [
      h.configured ? h.name : `${h.name} (not configured)`, h.url, String(h.summary?.pending ?? 0), String(h.summary?.expired ?? 0),
      String(h.summary?.orphaned ?? 0), isoTime(h.summary?.failingSince), h.summary?.lastError ?? "-",
    ]),
  ]));
  return 0;
}

function iso(ms: number | null | undefined): string | null {
  return ms ? new Date(ms).toISOString() : null;
}

async function test(config: Config, target: string, secret: string | undefined): Promise<number> {
  const hook = pickHook(config, target, secret);
  if (!hook) return noHook(config, target);
  const event: EventJson = {
    id: `test-${randomBytes(6).toString("hex")}`,
    type: hook.events[0] ?? "delivered",
    time: new Date().toISOString(),
    message_id: "test",
    recipient: "recipient@example.com",
    tag: null,
    metadata: {},
    details: { test: true },
  };
  print(`POST ${hook.url}${hook.name ? ` (hook ${hook.name})` : ""}, event ${event.id} (${event.type})`);
  const result = await postWebhook(hook.url, signRequest(hook.secret, event, Date.now()));
  if (result.status === null) {
    print(`no answer: ${result.error}`);
    return 1;
  }
  print(`status: ${result.status}`);
  print(`body: ${result.body}`);
  const ok = result.status >= 200 && result.status < 300;
  if (!ok) process.stderr.write(`outpost: the receiver did not accept it (${describeFailure(result)})\n`);
  return ok ? 0 : 1;
}

/** NAME → that hook; URL → the hook with that URL (its secret), or --secret for a URL not configured. */
function pickHook(config: Config, target: string, secret: string | undefined): Pick<WebhookConfig, "name" | "url" | "secret" | "events"> | null {
  const named = config.webhook.find((h) => h.name === target);
  if (named) {
    if (secret !== undefined) throw new UsageError(`--secret applies to a URL; hook ${named.name} signs with its own secret`);
    return named;
  }
  if (!/^https?:\/\//i.test(target)) return null;
  if (secret !== undefined) {
    if (secret === "") throw new UsageError("--secret must not be empty");
    return { name: "", url: target, secret, events: [] };
  }
  const withUrl = config.webhook.filter((h) => h.url === target);
  if (withUrl.length === 1) return withUrl[0]!;
  if (withUrl.length > 1) throw new UsageError(`hooks ${withUrl.map((h) => h.name).join(", ")} share ${target}: give the hook's NAME`);
  throw new UsageError(`${target} is not a configured [[webhook]] url: give --secret S to sign with (the receiver checks the signature with it)`);
}
