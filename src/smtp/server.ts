/**
 * @module smtp/server — the SMTP listeners: one smtp-server per `smtp.listen` address (plain +
 * STARTTLS) and per `smtp.tls_listen` address (implicit TLS), all sharing one set of session hooks.
 */
import { X509Certificate } from "node:crypto";
import type net from "node:net";
import { isIPv4, isIPv6 } from "node:net";
import tls from "node:tls";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { SMTPConnection, type SMTPConnectionOptions } from "smtp-server/lib/smtp-connection.js";
import type { SMTPStream } from "smtp-server/lib/smtp-stream.js";
import type { Config, ListenAddress, SmtpConfig } from "../config/schema.ts";
import type { Intake } from "../intake/accept.ts";
import type { Logger } from "../observe/log.ts";
import { dataMetrics, receiveMessage, type BounceSink } from "./data.ts";
import { scanData } from "./data-scan.ts";
import { Metrics, type Counter } from "../observe/metrics.ts";
import { SessionHooks, type CredentialCheck } from "./session.ts";
import { loadTlsMaterial, type TlsMaterial } from "./tls.ts";

export interface SmtpDeps {
  config: Config;
  intake: Intake;
  credentials: CredentialCheck;
  log: Logger;
  /** see SessionDeps.isLoopback */
  isLoopback?: (ip: string) => boolean;
  /** where mail for tracking.bounce_domain goes (bounce/ingest.ts); it also checks the `b+` tokens at RCPT */
  bounces: BounceSink;
  /** how long stop() lets open sessions finish before answering them 421 (default 10 s) */
  closeTimeoutMs?: number;
  /** idle timeouts (default IDLE_TIMEOUTS); injectable so a test need not wait a minute */
  idleTimeouts?: IdleTimeouts;
  /** the runtime's registry (default: one of its own) */
  metrics?: Metrics;
}

/** SMTP sessions: open now (read from the listeners at each scrape) and since start. */
function sessionGauges(metrics: Metrics, servers: () => Iterable<{ server: SMTPServer }>): Counter {
  metrics.gauge({
    name: "outpost_smtp_sessions",
    help: "SMTP sessions open now, on every listener.",
    collect: (g) => g.set([...servers()].reduce((n, { server }) => n + server.connections.size, 0)),
  });
  return metrics.counter({ name: "outpost_smtp_sessions_total", help: "SMTP sessions opened (connections admitted to a listener)." });
}

/**
 * How long a session may wait for the client's next command. A session that has not authenticated and is not
 * from trusted_networks gets a minute (as Postfix's smtpd_timeout under stress), so idle strangers cannot hold
 * connections for long; after AUTH, or from a trusted client, RFC 5321 §4.5.3.2's five minutes.
 */
export interface IdleTimeouts {
  unauthenticatedMs: number;
  sessionMs: number;
}

export const IDLE_TIMEOUTS: IdleTimeouts = { unauthenticatedMs: 60_000, sessionMs: 5 * 60_000 };

export interface BoundAddress {
  host: string;
  port: number;
  /** the address the socket is bound to: a listen host name resolved, "0.0.0.0" or "::" for a wildcard */
  ip: string;
  /** "starttls" for smtp.listen, "implicit" for smtp.tls_listen */
  tls: "starttls" | "implicit";
}

export interface SmtpService {
  name: "smtp";
  stop(): Promise<void>;
  /** the addresses actually bound (port 0 in the config becomes the OS-chosen port) */
  addresses(): BoundAddress[];
  hooks: SessionHooks;
  /**
   * A reload (SIGHUP): reads the certificate files again, new TLS sessions (STARTTLS and implicit) get them, and
   * `trusted_networks`/`auth_requires_tls` apply; other keys need a restart. Throws, changing nothing, when the
   * certificate cannot be read or does not match its key.
   */
  reconfigure(smtp: SmtpConfig): { fingerprint: string; replaced: boolean };
}

/** A reply text that already starts with an enhanced code ("5.7.1 …") is sent as is. */
const HAS_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;

/**
 * Departures from smtp-server's connection, by subclassing its methods:
 * - `send`: our handlers carry their own enhanced code (smtp-server would add a second, generic one
 *   derived from the reply code alone, e.g. "554 5.6.0" for a relay denial that is 5.7.1), and AUTH
 *   before STARTTLS is answered "530 5.7.0 Must issue a STARTTLS command first", not "500 unrecognized";
 * - `init`: no 100 ms "early talker" pause before the greeting. Smart hosts open a connection per
 *   message burst, and the pause would cap a session at ~10 messages/s; Postfix's smtpd has none;
 * - `_armTimeout` (smtp-server arms every socket of the connection through it): the idle timeout of this
 *   session (IdleTimeouts), made longer once AUTH succeeds (the 235 reply);
 * - `_createParser`: the parser reads DATA with `scanData` (data-scan.ts: the library's rules, native searches;
 *   smtp-server has no hook for it, data-scan.test.ts pins the library's pass it stands in for).
 */
class OutpostConnection extends SMTPConnection {
  /** the idle timeout for this session now; set by OutpostSmtpServer before init() */
  idleTimeout: (connection: OutpostConnection) => number = () => IDLE_TIMEOUTS.sessionMs;

  // called from SMTPConnection's constructor (and after STARTTLS): uses no field of this class
  override _createParser(): SMTPStream {
    const parser = super._createParser();
    parser._feedDataStream = scanData;
    return parser;
  }
  override init(): void {
    this._setListeners(() => this.connectionReady());
  }
  override _armTimeout(socket: net.Socket | tls.TLSSocket = this._socket): void {
    socket.setTimeout(this.idleTimeout(this), () => this._onTimeout());
  }
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    // AUTH withheld until STARTTLS (SessionHooks.onConnect) is "unrecognized" to smtp-server; say why instead
    if (code === 500 && context === "AUTH" && this.session.disabledCommands?.includes("AUTH")) {
      return super.send(530, "5.7.0 Must issue a STARTTLS command first", false);
    }
    super.send(code, data, typeof data === "string" && HAS_ENHANCED.test(data) ? false : context);
    // AUTH succeeded (session.user is set): only the duration changes, the armed timeout handler stays
    if (code === 235) this._socket.setTimeout(this.idleTimeout(this));
  }
}

class OutpostSmtpServer extends SMTPServer {
  constructor(
    options: SMTPServerOptions,
    private idleTimeout: (connection: OutpostConnection) => number,
    private opened: Counter,
  ) {
    super(options);
  }
  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    this.opened.inc();
    const connection = new OutpostConnection(this, socket, socketOptions);
    connection.idleTimeout = this.idleTimeout;
    this.connections.add(connection);
    connection.on("error", (err: Error) => this._onError(err));
    connection.on("connect", (data) => this._onClientConnect(data));
    connection.init();
  }
}

export async function startSmtp(deps: SmtpDeps): Promise<SmtpService> {
  const { config, log } = deps;
  const metrics = deps.metrics ?? new Metrics();
  const smtp = config.smtp;
  const material = loadTlsMaterial(smtp, config.data_dir, config.hostname);
  let fingerprint = fingerprintOf(material);
  log.info("smtp_tls_certificate", { source: material.source, file: material.certFile, fingerprint });
  const hooks = new SessionHooks({
    smtp,
    hostname: config.hostname,
    relay: { bounceDomain: config.tracking.bounce_domain, isValidBounceToken: (local) => deps.bounces.isValidToken(local) },
    bounceMaxSize: deps.bounces.maxSize,
    credentials: deps.credentials,
    log,
    isLoopback: deps.isLoopback,
    metrics,
  });
  const messages = dataMetrics(metrics);
  const idle = deps.idleTimeouts ?? IDLE_TIMEOUTS;
  const idleTimeout = (c: OutpostConnection) =>
    c.session.user || hooks.isTrusted(c.remoteAddress) ? idle.sessionMs : idle.unauthenticatedMs;
  const servers: Array<{ server: OutpostSmtpServer; bound: BoundAddress }> = [];
  const opened = sessionGauges(metrics, () => servers);
  try {
    for (const [list, secure] of [[smtp.listen, false], [smtp.tls_listen, true]] as const) {
      for (const addr of list) {
        const server = new OutpostSmtpServer(serverOptions(deps, hooks, material, secure, messages), idleTimeout, opened);
        gateConnections(server, hooks, secure);
        server.on("error", (err: Error & { code?: string }) => log.debug("smtp_connection_error", { code: err.code, error: err }));
        const socket = await listen(server, addr, ipv6Only(addr, [...smtp.listen, ...smtp.tls_listen]));
        const bound: BoundAddress = { host: addr.host, ...socket, tls: secure ? "implicit" : "starttls" };
        servers.push({ server, bound });
        log.info("smtp_listening", { ...bound });
      }
    }
  } catch (e) {
    await Promise.all(servers.map(({ server }) => closeServer(server)));
    throw e;
  }

  return {
    name: "smtp",
    hooks,
    addresses: () => servers.map((s) => s.bound),
    async stop() {
      await Promise.all(servers.map(({ server }) => closeServer(server)));
    },
    reconfigure(next) {
      const fresh = loadTlsMaterial(next, config.data_dir, config.hostname);
      const before = fingerprint;
      let after: string;
      try {
        // checked first: smtp-server's updateSecureContext, failing half-way, would leave a listener with no context
        tls.createSecureContext({ key: fresh.key, cert: fresh.cert });
        after = fingerprintOf(fresh);
      } catch (e) {
        throw new Error(`cannot use the certificate ${fresh.certFile} with its key: ${e instanceof Error ? e.message : String(e)}`);
      }
      for (const { server } of servers) server.updateSecureContext({ key: fresh.key, cert: fresh.cert });
      hooks.reconfigure({ trusted_networks: next.trusted_networks, auth_requires_tls: next.auth_requires_tls });
      fingerprint = after;
      return { fingerprint, replaced: after !== before };
    },
  };
}

/** The SHA-256 fingerprint (as `openssl x509 -fingerprint -sha256` prints it) of the certificate presented. */
function fingerprintOf(material: TlsMaterial): string {
  return new X509Certificate(material.cert).fingerprint256;
}

/** smtp-server's options for one listener; every listener shares `hooks`, so per-IP limits span them all. */
function serverOptions(deps: SmtpDeps, hooks: SessionHooks, material: TlsMaterial, secure: boolean, messages: Counter<"result">): SMTPServerOptions {
  const { config, log } = deps;
  const smtp = config.smtp;
  const dataDeps = {
    intake: deps.intake, bounces: deps.bounces, bounceDomain: config.tracking.bounce_domain,
    hostname: config.hostname, maxMessageSize: smtp.max_message_size, log, messages,
  };
  return {
    name: config.hostname,
    banner: "outpost",
    key: material.key,
    cert: material.cert,
    secure,
    size: smtp.max_message_size,
    authMethods: ["PLAIN", "LOGIN"],
    // relay policy decides who may send without AUTH (trusted networks, the bounce domain)
    authOptional: true,
    // auth_requires_tls is enforced per session in SessionHooks (loopback is exempt)
    allowInsecureAuth: true,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: true,
    hideREQUIRETLS: true,
    disableReverseLookup: true,
    // OutpostConnection arms each session's own idle timeout; smtp-server also bounds a half-closed socket by this
    socketTimeout: (deps.idleTimeouts ?? IDLE_TIMEOUTS).sessionMs,
    closeTimeout: deps.closeTimeoutMs ?? 10_000,
    logger: false,
    onConnect: (session, cb) => hooks.onConnect(session, cb),
    onSecure: (_socket, session, cb) => hooks.onSecure(session, cb),
    onAuth: (auth, session, cb) => hooks.onAuth(auth, session, cb),
    onMailFrom: (address, session, cb) => hooks.onMailFrom(address, session, cb),
    onRcptTo: (address, session, cb) => hooks.onRcptTo(address, session, cb),
    onData: (stream, session, cb) => receiveMessage(dataDeps, stream, session, cb),
    onClose: (session) => hooks.onClose(session),
  };
}

/** Puts SessionHooks.admitSocket in front of smtp-server's own accept handler, so the per-IP limit applies before any TLS handshake. */
function gateConnections(server: SMTPServer, hooks: SessionHooks, implicitTls: boolean): void {
  const tcp = server.server;
  const accept = tcp.listeners("connection") as Array<(socket: net.Socket) => void>;
  tcp.removeAllListeners("connection");
  tcp.on("connection", (socket: net.Socket) => {
    if (hooks.admitSocket(socket, implicitTls)) for (const handler of accept) handler.call(tcp, socket);
  });
}

/**
 * An IPv6 address is bound IPv6-only when an IPv4 address is listed on the same port: "0.0.0.0:587" with
 * "[::]:587" is the usual MTA config, and Linux would otherwise let "[::]" take IPv4 too and the second bind
 * fail. Alone, "[::]:25" stays dual-stack (IPv4 clients keep reaching it); an IPv4-mapped "::ffff:…" address
 * cannot be IPv6-only at all.
 */
export function ipv6Only(addr: ListenAddress, all: readonly ListenAddress[]): boolean {
  if (!isIPv6(addr.host) || addr.host.toLowerCase().startsWith("::ffff:")) return false;
  return all.some((a) => isIPv4(a.host) && a.port === addr.port && addr.port !== 0);
}

function listen(server: SMTPServer, addr: ListenAddress, v6Only: boolean): Promise<{ ip: string; port: number }> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(new Error(`cannot listen on ${addr.host}:${addr.port}: ${e.message}`));
    server.server.once("error", onError);
    server.listen({ port: addr.port, host: addr.host, ipv6Only: v6Only }, () => {
      server.server.off("error", onError);
      const a = server.server.address();
      resolve(typeof a === "object" && a ? { ip: a.address, port: a.port } : { ip: addr.host, port: addr.port });
    });
  });
}

function closeServer(server: SMTPServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
