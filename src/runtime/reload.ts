/**
 * @module runtime/reload — SIGHUP: reads the config file and the TLS certificate again and hands each service the
 * part of the new config it can take while running. Keys that need a restart keep their running value and are
 * named in one warning; a config `serve` would refuse at start is refused here too, and the running one stays.
 */
import type { Config, DeliveryConfig, DnsConfig, HttpConfig, SmtpConfig, TrackingConfig, WebhookConfig } from "../config/schema.ts";
import type { Logger } from "../observe/log.ts";

/** The keys (as written in outpost.toml) a running `serve` takes on reload; any other key needs a restart. */
export const RELOADABLE: ReadonlySet<string> = new Set([
  "smtp.tls_cert", "smtp.tls_key", "smtp.trusted_networks", "smtp.auth_requires_tls",
  "http.rate", "http.metrics_token",
  "dns.servers",
  "delivery.concurrency", "delivery.per_destination_connections", "delivery.messages_per_connection",
  "delivery.retry", "delivery.max_queue_time", "delivery.delay_warning", "delivery.tls", "delivery.sandbox",
  "delivery.route", "delivery.destination",
  "tracking.inline_css", "tracking.clicks", "tracking.opens", "tracking.bounces", "tracking.unsubscribe",
  "webhook", "webhook_retention",
]);

/** A reloadable key that means something only with another key's new value: while that one waits for a restart, so does it. */
const RESTS_ON: Readonly<Record<string, string>> = {
  // on by default with the running (perhaps empty) bounce domain or public URL, they would refuse or misdirect mail
  "tracking.bounces": "tracking.bounce_domain",
  "tracking.clicks": "http.public_url",
  "tracking.opens": "http.public_url",
  "tracking.unsubscribe": "http.public_url",
};

/** The services' reload entry points (runtime/start.ts wires them); each takes its slice of the config. */
export interface Reconfigurable {
  /**
   * Reads the certificate files again (also when their paths did not change: certbot replaces the files) and
   * takes the SMTP keys it can; throws, having changed nothing, when the certificate cannot be used.
   */
  smtp?: { reconfigure(smtp: SmtpConfig): { fingerprint: string; replaced: boolean } };
  http?: { reconfigure(http: HttpConfig): void };
  delivery?: { reconfigure(config: { delivery: DeliveryConfig; dns: DnsConfig }): void };
  intake: { reconfigure(tracking: TrackingConfig): void };
  /** the hooks for events recorded from now on, and for the outbox worker (retention: `webhook_retention`, ms) */
  events: { reconfigure(webhooks: readonly WebhookConfig[], retention: number): void };
}

/**
 * Loads the new config, applies what can change, and returns the config now in force: the new one with every
 * key that needs a restart at its running value, or `running` itself when the new one was refused.
 */
export function reloadConfig(running: Config, load: () => Config, services: Reconfigurable, log: Logger): Config {
  let next: Config;
  try {
    next = load();
  } catch (e) {
    return refused(running, e, log);
  }
  const keys = changedKeys(running, next);
  const restart = keys.filter((k) => !RELOADABLE.has(k) || (RESTS_ON[k] !== undefined && keys.includes(RESTS_ON[k]!)));
  const changed = keys.filter((k) => !restart.includes(k));
  const applied = keepRunning(next, running, restart);
  let certificate: { fingerprint: string; replaced: boolean } | undefined;
  try {
    // first: the one step that can fail (a certificate that does not match its key), before anything has changed
    certificate = services.smtp?.reconfigure(applied.smtp);
  } catch (e) {
    return refused(running, e, log);
  }
  const touched = (prefix: string) => changed.some((k) => k === prefix || k.startsWith(`${prefix}.`));
  if (touched("http")) services.http?.reconfigure(applied.http);
  if (touched("delivery") || touched("dns")) services.delivery?.reconfigure({ delivery: applied.delivery, dns: applied.dns });
  if (touched("tracking")) services.intake.reconfigure(applied.tracking);
  if (touched("webhook") || touched("webhook_retention")) services.events.reconfigure(applied.webhook, applied.webhook_retention);
  log.info("config_reloaded", {
    file: next.file, changed,
    ...(certificate ? { tls_certificate: certificate.fingerprint, tls_certificate_replaced: certificate.replaced } : {}),
  });
  if (restart.length > 0) {
    log.warn("config_needs_restart", { keys: restart, message: `needs a restart: ${restart.join(", ")} (the running values are kept until then)` });
  }
  return applied;
}

/** The message `serve` prints when it cannot start with this config (a ConfigError's: FILE: KEY: problem), and the running config kept. */
function refused(running: Config, e: unknown, log: Logger): Config {
  const error = e instanceof Error ? e.message : String(e);
  log.error("config_reload_refused", { error, kept: "the running configuration" });
  return running;
}

/**
 * The keys whose values differ, as written in outpost.toml: a table's own keys (`smtp.listen`), and whole
 * values for the rest (`hostname`, `webhook`, `delivery.route`, `delivery.destination`). `[database]` counts as
 * one: its `path` is derived from `url`, and is no key of the file.
 */
export function changedKeys(a: Config, b: Config): string[] {
  const out: string[] = [];
  for (const top of Object.keys(a) as Array<keyof Config>) {
    if (top === "file") continue; // where the config came from, not a setting
    const [x, y] = [a[top], b[top]];
    if (isTable(x) && isTable(y) && top !== "database") {
      for (const key of new Set([...Object.keys(x), ...Object.keys(y)])) {
        if (!Bun.deepEquals(x[key], y[key], true)) out.push(`${top}.${key}`);
      }
    } else if (!Bun.deepEquals(x, y, true)) {
      out.push(top);
    }
  }
  return out;
}

/** `next`, with each of `keys` (from changedKeys) at its value in `running`. */
export function keepRunning(next: Config, running: Config, keys: readonly string[]): Config {
  // Config as plain tables: keys are only those changedKeys produced from these same two objects
  const out: Record<string, unknown> = { ...next };
  const from = running as unknown as Record<string, unknown>;
  for (const key of keys) {
    const [top, sub] = key.split(".") as [string, string | undefined];
    if (sub === undefined) out[top] = from[top];
    else out[top] = Object.freeze({ ...(out[top] as object), [sub]: (from[top] as Record<string, unknown>)[sub] });
  }
  return Object.freeze(out) as unknown as Config;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
