/**
 * @module config/build — turns a parsed outpost.toml into a `Config`: every key of docs/config.md, its type,
 * its default. Defaults are written in the same textual form as the file, so they read like docs/config.md.
 */
import { createHash } from "node:crypto";
import { accessSync, constants, statSync } from "node:fs";
import { hostname as machineHostname } from "node:os";
import { join, resolve } from "node:path";
import { ConfigError } from "./errors.ts";
import type {
  Config, DatabaseConfig, DeliveryConfig, DestinationConfig, DkimKeyConfig, EventType, HttpConfig,
  LogLevel, RouteConfig, RouteTlsPolicy, SmtpConfig, SpfConfig, TlsPolicy, TrackingConfig, WebhookConfig,
} from "./schema.ts";
import type { Section } from "./section.ts";
import {
  isHostname, parseCidr, parseDnsServer, parseDomain, parseDomainPattern, parseDuration,
  parseHost, parseHttpUrl, parseListen, parseRate, parseSize,
} from "./units.ts";

export type Env = Record<string, string | undefined>;

export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
export const TLS_POLICIES: readonly TlsPolicy[] = ["opportunistic", "required"];
export const ROUTE_TLS_POLICIES: readonly RouteTlsPolicy[] = [...TLS_POLICIES, "verify"];
export const EVENT_TYPES: readonly EventType[] = [
  "queued", "delivered", "deferred", "bounced", "opened", "clicked", "suppressed", "complained", "unsubscribed",
];
const DEFAULT_RETRY = ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h"];

/** Reads every top-level key; the caller checks the root for unknown keys. */
export function buildConfig(root: Section, file: string | null, env: Env): Config {
  const hostname = readHostname(root);
  const data_dir = root.filePath("data_dir", "./data");
  const log_level = root.oneOf("log_level", LOG_LEVELS, "info");
  const http = root.within("http", readHttp);
  return {
    file,
    hostname,
    data_dir,
    log_level: envLogLevel(env) ?? log_level,
    smtp: root.within("smtp", readSmtp),
    http,
    dns: root.within("dns", (s) => ({ servers: s.list("servers", parseDnsServer, []) })),
    delivery: root.within("delivery", readDelivery),
    tracking: root.within("tracking", (s) => readTracking(s, http.public_url)),
    spf: root.within("spf", readSpf),
    dkim: root.each("dkim", dkimReader()),
    webhook: root.each("webhook", webhookReader()),
    webhook_retention: root.parsed("webhook_retention", positiveDuration, "7d"),
    database: root.within("database", (s) => readDatabase(s, data_dir)),
  };
}

/** The machine's name is trusted as it is; a configured one must be a valid host name. */
function readHostname(root: Section): string {
  if (!root.has("hostname")) return machineHostname();
  return root.parsed("hostname", (text) => {
    if (!isHostname(text)) throw new Error('expected a host name like "mail.example.com"');
    return text.toLowerCase();
  });
}

/** OUTPOST_LOG wins over the file so an operator can turn on debug logs without editing it. */
function envLogLevel(env: Env): LogLevel | undefined {
  const value = env.OUTPOST_LOG?.trim().toLowerCase();
  if (value === undefined || value === "") return undefined;
  const level = LOG_LEVELS.find((l) => l === value);
  if (!level) throw new ConfigError("OUTPOST_LOG", "", `expected one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(env.OUTPOST_LOG)}`);
  return level;
}

function readSmtp(s: Section): SmtpConfig {
  const [tls_cert, tls_key] = readCertPair(s);
  return {
    listen: s.list("listen", parseListen, ["127.0.0.1:2525"]),
    tls_listen: s.list("tls_listen", parseListen, []),
    tls_cert,
    tls_key,
    auth_requires_tls: s.boolean("auth_requires_tls", true),
    trusted_networks: s.list("trusted_networks", parseCidr, []),
    max_message_size: readSize(s, "max_message_size", "25MB"),
    max_recipients: s.integer("max_recipients", 100),
    max_connections_per_ip: s.integer("max_connections_per_ip", 20),
    max_connections: s.integer("max_connections", 1000),
    auth_failures_before_block: s.integer("auth_failures_before_block", 5),
    auth_block_time: s.parsed("auth_block_time", parseDuration, "15m"),
    max_hops: s.integer("max_hops", 50),
    allow_address_literals: s.boolean("allow_address_literals", false),
  };
}

/** Both or neither: one PEM without the other cannot make a TLS context. */
function readCertPair(s: Section): [string, string] {
  const cert = s.string("tls_cert", "");
  const key = s.string("tls_key", "");
  if (cert === "" && key !== "") s.fail("tls_cert", "must be set when tls_key is set");
  if (key === "" && cert !== "") s.fail("tls_key", "must be set when tls_cert is set");
  return cert === "" ? ["", ""] : [readableFile(s, "tls_cert"), readableFile(s, "tls_key")];
}

/** A size may be a string with a unit or a bare TOML integer of bytes. */
function readSize(s: Section, key: string, fallback: string): number {
  const value = s.raw(key) ?? fallback;
  if (typeof value !== "string" && typeof value !== "number") s.fail(key, "expected a size such as \"25MB\"");
  const bytes = s.attempt(key, () => parseSize(value));
  if (bytes < 1) s.fail(key, "must be at least 1 byte");
  return bytes;
}

function readHttp(s: Section): HttpConfig {
  return {
    listen: s.parsed("listen", parseListen, "127.0.0.1:8025"),
    public_url: s.parsed("public_url", optional(parsePublicUrl), "http://127.0.0.1:8025"),
    rate: s.parsed("rate", (text) => (text === "" ? null : parseRate(text)), ""),
    metrics_token: s.parsed("metrics_token", parseBearerToken, ""),
  };
}

/** RFC 6750 §2.1 b64token characters: what can follow "Bearer " in a header unchanged. */
function parseBearerToken(text: string): string {
  if (text !== "" && !/^[A-Za-z0-9\-._~+/]+=*$/.test(text)) {
    throw new Error("expected a token of letters, digits and -._~+/ (it is sent as Authorization: Bearer TOKEN)");
  }
  return text;
}

function readDelivery(s: Section): DeliveryConfig {
  if (s.raw("tls") === "verify") {
    s.fail("tls", 'expected "opportunistic" or "required"; "verify" is for [[delivery.route]] (MX hosts have no name to verify against)');
  }
  const tls = s.oneOf("tls", TLS_POLICIES, "opportunistic");
  const retry = s.list("retry", positiveDuration, DEFAULT_RETRY);
  if (retry.length === 0) s.fail("retry", "expected at least one duration");
  return {
    concurrency: s.integer("concurrency", 200),
    per_destination_connections: s.integer("per_destination_connections", 5),
    messages_per_connection: s.integer("messages_per_connection", 100),
    retry,
    max_queue_time: s.parsed("max_queue_time", positiveDuration, "5d"),
    delay_warning: s.parsed("delay_warning", parseDuration, "0s"),
    tls,
    sandbox: s.boolean("sandbox", false),
    route: s.each("route", (r) => readRoute(r, tls)),
    destination: s.named("destination", parseDomainPattern, readDestination),
  };
}

function positiveDuration(text: string): number {
  const ms = parseDuration(text);
  if (ms <= 0) throw new Error("expected a duration greater than zero");
  return ms;
}

/**
 * A route without its own `tls` verifies the certificate when it has credentials (a man in the middle must not
 * collect the smart host's password), else follows `delivery.tls`.
 */
function readRoute(s: Section, tls: TlsPolicy): RouteConfig {
  const username = s.string("username", "");
  const password = s.string("password", "");
  if (username !== "" && password === "") s.fail("password", "must be set when username is set");
  if (username === "" && password !== "") s.fail("username", "must be set when password is set");
  const route: RouteConfig = {
    domain: s.parsed("domain", parseDomainPattern),
    host: s.parsed("host", parseHost),
    port: s.integer("port", 25, 1, 65535),
    tls: s.oneOf("tls", ROUTE_TLS_POLICIES, username !== "" ? "verify" : tls),
    tls_ca: s.has("tls_ca") ? readableFile(s, "tls_ca") : "",
    username,
    password,
  };
  if (route.tls_ca !== "" && route.tls !== "verify") s.fail("tls_ca", `is only used with tls = "verify" (this route has "${route.tls}")`);
  return route;
}

function readDestination(s: Section): DestinationConfig {
  const destination: DestinationConfig = {};
  if (s.has("per_destination_connections")) {
    destination.per_destination_connections = s.integer("per_destination_connections", undefined);
  }
  if (s.has("rate")) destination.rate = s.parsed("rate", parseRate);
  return destination;
}

/** Tracking links are the base + `/t/c/TOKEN`: a query or fragment in the base would swallow the path. */
function parsePublicUrl(text: string): string {
  const url = parseHttpUrl(text);
  if (/[?#]/.test(url)) throw new Error('expected a base URL without "?" or "#", like "https://mail.example.com"');
  return url;
}

/** Options whose links point at http.public_url: on by default, every message would be refused without one. */
const NEEDS_PUBLIC_URL = ["clicks", "opens", "unsubscribe"] as const;

function readTracking(s: Section, publicUrl: string): TrackingConfig {
  const tracking: TrackingConfig = {
    bounce_domain: s.parsed("bounce_domain", optional(parseDomain), ""),
    bounce_max_size: readSize(s, "bounce_max_size", "1MB"),
    postmaster_forward: s.parsed("postmaster_forward", optional(parseMailbox), ""),
    inbound_retention: s.parsed("inbound_retention", positiveDuration, "30d"),
    inline_css: s.boolean("inline_css", false),
    clicks: s.boolean("clicks", false),
    opens: s.boolean("opens", false),
    bounces: s.boolean("bounces", false),
    unsubscribe: s.boolean("unsubscribe", false),
  };
  for (const key of NEEDS_PUBLIC_URL) {
    if (tracking[key] && publicUrl === "") s.fail(key, "needs http.public_url (the base of tracking and unsubscribe links), which is empty");
  }
  // a VERP return path needs a domain to live on; without one the default would be refused on every message
  if (tracking.bounces && tracking.bounce_domain === "") s.fail("bounces", "needs tracking.bounce_domain (the VERP return-path domain)");
  const forwardDomain = tracking.postmaster_forward.slice(tracking.postmaster_forward.lastIndexOf("@") + 1);
  if (tracking.bounce_domain !== "" && forwardDomain === tracking.bounce_domain) {
    s.fail("postmaster_forward", "must not be at tracking.bounce_domain (the mail would come straight back)");
  }
  return tracking;
}

/** A plain mailbox address "local@domain" (no display name, no angle brackets), domain lower-cased. */
function parseMailbox(text: string): string {
  const at = text.lastIndexOf("@");
  const local = text.slice(0, at);
  if (at <= 0 || !/^[^\s"@<>()[\]\\,;:]+$/.test(local)) throw new Error('expected an address like "postmaster@example.com"');
  return `${local}@${parseDomain(text.slice(at + 1))}`;
}

function readSpf(s: Section): SpfConfig {
  return {
    include_domain: s.parsed("include_domain", optional(parseDomain), ""),
    ips: s.list("ips", parseSendingAddress, []),
    require_verified_domains: s.boolean("require_verified_domains", false),
  };
}

/** "203.0.113.7", or a network "203.0.113.0/28" whose host bits are clear (a typo in a range is refused, not widened). */
function parseSendingAddress(text: string): string {
  const cidr = parseCidr(text);
  if (cidr.prefix === (cidr.family === 4 ? 32 : 128)) return cidr.address;
  if (cidr.prefix === 0) throw new Error("a /0 network would let anyone send as every customer");
  const given = parseCidr(text.slice(0, text.indexOf("/"))).address;
  if (given !== cidr.address) throw new Error(`host bits are set: did you mean "${cidr.address}/${cidr.prefix}"?`);
  return `${cidr.address}/${cidr.prefix}`;
}

/**
 * Reads each `[[dkim]]` table. A second key for one (domain, selector) is refused: both would claim the one
 * DNS record `selector._domainkey.domain`, so one of them could never verify. (The key itself is parsed by
 * dkim/keys.ts when `serve` starts.)
 */
function dkimReader(): (s: Section) => DkimKeyConfig {
  const seen = new Map<string, string>();
  return (s) => {
    const key: DkimKeyConfig = {
      domain: s.parsed("domain", parseDomain),
      selector: s.parsed("selector", parseSelector),
      private_key_file: readableFile(s, "private_key_file"),
    };
    const name = `${key.selector}._domainkey.${key.domain}`;
    const first = seen.get(name);
    if (first !== undefined) s.fail("selector", `repeats ${first} (domain ${JSON.stringify(key.domain)}, selector ${JSON.stringify(key.selector)}): each key needs its own selector`);
    seen.set(name, s.path);
    return key;
  };
}

/**
 * A DKIM selector: one or more DNS labels (RFC 6376 §3.1), lower-cased (DNS names ignore case). Unlike a host
 * name it may be all digits ("202612").
 */
export function parseSelector(text: string): string {
  const labels = text.split(".");
  if (text.length > 63 || !labels.every((l) => /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/i.test(l))) {
    throw new Error('expected a DKIM selector like "s1": letters, digits, "-" and "_" in labels separated by dots, 63 characters at most');
  }
  return text.toLowerCase();
}

/**
 * Reads each `[[webhook]]` table. Names are the hooks' ids in the outbox (rows already written keep theirs), so two
 * hooks may not share one: that is the case for two hooks with the same URL and no `name`.
 */
function webhookReader(): (s: Section) => WebhookConfig {
  const seen = new Map<string, string>();
  return (s) => {
    const url = s.parsed("url", parseWebhookUrl);
    const webhook: WebhookConfig = {
      name: s.has("name") ? s.parsed("name", parseWebhookName) : webhookName(url),
      url,
      events: s.list("events", parseEventType, EVENT_TYPES),
      user: s.string("user", ""),
      secret: s.string("secret"),
    };
    // An empty secret would make every signature forgeable.
    if (webhook.secret === "") s.fail("secret", "must not be empty");
    const first = seen.get(webhook.name);
    if (first !== undefined) {
      const why = s.has("name") ? "" : " (the name derived from the same url: give each hook its own name)";
      s.fail("name", `repeats ${JSON.stringify(webhook.name)} of ${first}${why}`);
    }
    seen.set(webhook.name, s.path);
    return webhook;
  };
}

/** The URL as written (a receiver may tell "/hook" from "/hook/"), http or https. */
function parseWebhookUrl(text: string): string {
  const url = URL.parse(text);
  if (url?.protocol !== "http:" && url?.protocol !== "https:") throw new Error('expected an http(s) URL like "https://app.example.com/hooks/mail"');
  return url.href;
}

const WEBHOOK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function parseWebhookName(text: string): string {
  if (!WEBHOOK_NAME.test(text)) throw new Error('expected a name like "app": letters, digits, ".", "_" and "-", 64 characters at most');
  return text;
}

/**
 * A hook's default name: its host and a hash of its URL ("app.example.com-3f2a9c1e"), so it stays the same while
 * the URL does (changing `events`, `user` or `secret` keeps the hook's pending rows), and reads well in a listing.
 */
export function webhookName(url: string): string {
  const host = new URL(url).hostname.replace(/[^A-Za-z0-9.-]/g, "").replace(/^[.-]+/, "").slice(0, 40) || "hook";
  return `${host}-${createHash("sha256").update(url).digest("hex").slice(0, 8)}`;
}

function parseEventType(text: string): EventType {
  const type = EVENT_TYPES.find((t) => t === text);
  if (!type) throw new Error(`unknown event type; expected one of ${EVENT_TYPES.join(", ")}`);
  return type;
}

function readDatabase(s: Section, dataDir: string): DatabaseConfig {
  const url = s.string("url", `sqlite:${join(dataDir, "outpost.db")}`);
  if (/^postgres(ql)?:/i.test(url)) s.fail("url", 'postgres is not supported yet; use "sqlite:PATH"');
  const rest = url.startsWith("sqlite:") ? url.slice("sqlite:".length) : "";
  if (rest === "") s.fail("url", 'expected "sqlite:PATH"');
  // ":memory:" is SQLite's name for a private in-memory database, not a path.
  const path = rest === ":memory:" ? rest : resolve(s.origin.baseDir, rest);
  return { url: `sqlite:${path}`, path };
}

/** Resolves a required path and checks now that it can be read, rather than failing mid-delivery. */
function readableFile(s: Section, key: string): string {
  const path = s.filePath(key);
  if (path === "") s.fail(key, "must not be empty");
  try {
    accessSync(path, constants.R_OK);
    if (!statSync(path).isFile()) s.fail(key, `${path} is not a file`);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    s.fail(key, `cannot read ${path}: ${describeFsError(error)}`);
  }
  return path;
}

export function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EISDIR") return "is a directory";
  return error instanceof Error ? error.message : String(error);
}

function optional<T>(parse: (text: string) => T): (text: string) => T | "" {
  return (text) => (text === "" ? "" : parse(text));
}
