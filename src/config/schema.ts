/** @module config/schema — the typed, validated configuration (one entry per key of docs/config.md) and its defaults. */

/** A listen address such as "127.0.0.1:2525" or "[::1]:2525", parsed. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** A rate such as "600/min": `count` events per `perMs` milliseconds. */
export interface Rate {
  count: number;
  perMs: number;
}

/** A CIDR block such as "10.0.0.0/8" or "2001:db8::/32". */
export interface Cidr {
  family: 4 | 6;
  /** network address, normalised */
  address: string;
  prefix: number;
}

/** `delivery.tls`: STARTTLS whenever offered (unverified), or never in clear. */
export type TlsPolicy = "opportunistic" | "required";
/** A static route may also ask for a verified certificate (chain and host name): the default with credentials. */
export type RouteTlsPolicy = TlsPolicy | "verify";

export interface SmtpConfig {
  listen: ListenAddress[];
  tls_listen: ListenAddress[];
  /** absolute path or "" (self-signed cert generated in data_dir) */
  tls_cert: string;
  tls_key: string;
  auth_requires_tls: boolean;
  trusted_networks: Cidr[];
  /** bytes */
  max_message_size: number;
  max_recipients: number;
  /** an IPv6 client counts by its /64 */
  max_connections_per_ip: number;
  /** open SMTP connections in total, every listener together */
  max_connections: number;
  auth_failures_before_block: number;
  /** ms */
  auth_block_time: number;
  /** a message with more `Received` fields than this (ours included) is refused: a mail loop (RFC 5321 §6.3) */
  max_hops: number;
  /** recipients at address literals (`user@[192.0.2.1]`) are refused unless true: nobody may make us connect to any IP */
  allow_address_literals: boolean;
}

export interface HttpConfig {
  listen: ListenAddress;
  /** base of tracking and unsubscribe links, no trailing `/`; "" when this instance has none (tracking refused) */
  public_url: string;
  rate: Rate | null;
  /** when not "", GET /metrics needs `Authorization: Bearer` with it */
  metrics_token: string;
}

export interface DnsConfig {
  servers: ListenAddress[];
}

export interface RouteConfig {
  /** exact domain, "*.example.com", or "*" */
  domain: string;
  host: string;
  port: number;
  tls: RouteTlsPolicy;
  /** absolute path of a PEM file with the CAs trusted for `verify` instead of the system's, or "" */
  tls_ca: string;
  username: string;
  password: string;
}

export interface DestinationConfig {
  per_destination_connections?: number;
  rate?: Rate;
}

export interface DeliveryConfig {
  concurrency: number;
  per_destination_connections: number;
  messages_per_connection: number;
  /** ms, the last repeats */
  retry: number[];
  /** ms */
  max_queue_time: number;
  /** ms a message may wait before its sender is told it is delayed (one DSN, action "delayed"); 0 is off */
  delay_warning: number;
  tls: TlsPolicy;
  sandbox: boolean;
  route: RouteConfig[];
  /** keyed by recipient domain or MX host pattern ("*.protection.outlook.com") */
  destination: Record<string, DestinationConfig>;
}

export interface TrackingConfig {
  bounce_domain: string;
  /** bytes: the largest message accepted for the bounce domain (anyone may send there) */
  bounce_max_size: number;
  /** where mail to postmaster@/abuse@ the bounce domain is forwarded; "" keeps it only */
  postmaster_forward: string;
  /** ms: how long mail kept at the bounce domain (postmaster, abuse, unparsed) is kept */
  inbound_retention: number;
  inline_css: boolean;
  clicks: boolean;
  opens: boolean;
  bounces: boolean;
  /** List-Unsubscribe with one-click (RFC 8058) */
  unsubscribe: boolean;
}

export interface SpfConfig {
  /** the name customers `include:`; "" when not set */
  include_domain: string;
  /** the addresses outpost sends from: single addresses ("203.0.113.7") or networks ("203.0.113.0/28"), normalised */
  ips: string[];
  /** a user's sender domain is allowed only once its domain check has passed */
  require_verified_domains: boolean;
}

export interface DkimKeyConfig {
  domain: string;
  selector: string;
  /** absolute path (resolved against the config file's directory) */
  private_key_file: string;
}

export type EventType =
  | "queued"
  | "delivered"
  | "deferred"
  | "bounced"
  | "opened"
  | "clicked"
  | "suppressed"
  | "complained"
  | "unsubscribed";

export interface WebhookConfig {
  /** the hook's stable id in the outbox; when not configured, derived from the URL (config/build.ts webhookName) */
  name: string;
  url: string;
  events: EventType[];
  /** only this user's events (a user NAME, resolved to an id when `serve` starts or reloads); "": every user's */
  user: string;
  secret: string;
}

export interface DatabaseConfig {
  /** "sqlite:PATH"; PATH resolved to an absolute file path */
  url: string;
  /** the absolute path of the SQLite file */
  path: string;
}

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Config {
  /** the file it was read from, or null for built-in defaults */
  file: string | null;
  hostname: string;
  /** absolute path */
  data_dir: string;
  log_level: LogLevel;
  smtp: SmtpConfig;
  http: HttpConfig;
  dns: DnsConfig;
  delivery: DeliveryConfig;
  tracking: TrackingConfig;
  spf: SpfConfig;
  dkim: DkimKeyConfig[];
  webhook: WebhookConfig[];
  /** ms a finished webhook outbox row (delivered, expired, orphaned) is kept before it is deleted */
  webhook_retention: number;
  database: DatabaseConfig;
}
