/**
 * @module smtp/session — smtp-server's connection, AUTH and envelope hooks, each answering with an
 * SmtpError (code + enhanced code) or accepting. Holds the per-IP limits shared by all listeners.
 */
import type net from "node:net";
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerSession } from "smtp-server";
import type { User } from "../auth/users.ts";
import type { Cidr, SmtpConfig } from "../config/schema.ts";
import { cidrContains, clientKey, isLoopback } from "../config/units.ts";
import { checkRecipientCount, checkRecipientDomain, checkSender, type PolicyLimits } from "../intake/policy.ts";
import { addressKey, checkAddress } from "../mail/address.ts";
import { SmtpError } from "../mail/errors.ts";
import type { Logger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import { AuthGuard, ConnectionCounter } from "./auth-guard.ts";
import { decideRecipient, kindOf, type RelayPolicy } from "./relay.ts";

/** Checks a user name and password; resolves to the user, or null when they do not match. */
export interface CredentialCheck {
  check(name: string, password: string): Promise<User | null>;
  /**
   * The user when this name and password were verified a moment ago (auth/users.ts caches successes), else
   * null; no slow hash. Such a login is no guess, so it needs no place among the guesses the guard allows.
   */
  cached?(name: string, password: string): User | null;
}

export interface SessionDeps {
  smtp: SmtpConfig;
  hostname: string;
  relay: RelayPolicy;
  /** bytes: the limit for a transaction to the bounce domain (tracking.bounce_max_size) */
  bounceMaxSize: number;
  credentials: CredentialCheck;
  log: Logger;
  /**
   * Is this client address local, so AUTH without TLS is allowed under auth_requires_tls?
   * Default: 127.0.0.0/8 and ::1. Injectable so a test on loopback can play a remote client.
   */
  isLoopback?: (ip: string) => boolean;
  /** the runtime's registry (default: one of its own) */
  metrics?: Metrics;
}

/** What the session hooks count: refusals that a dashboard should show (guessing, relay probing, floods). */
function sessionMetrics(metrics: Metrics) {
  return {
    authFailures: metrics.counter({ name: "outpost_smtp_auth_failures_total", help: "AUTH attempts refused (wrong name or password, or proxying as another user)." }),
    relayDenied: metrics.counter({
      name: "outpost_smtp_relay_denied_total",
      help: "RCPT TO refused 554 5.7.1 relaying denied (a client neither authenticated nor in smtp.trusted_networks).",
    }),
    refused: metrics.counter({
      name: "outpost_smtp_connections_refused_total",
      help: "Connections refused before the greeting, by reason (max_connections, max_connections_per_ip, auth_blocked).",
      labelNames: ["reason"],
    }),
  };
}

/** A connection gets closed after this many failed AUTHs, even before its IP is blocked. */
export const AUTH_FAILURES_PER_CONNECTION = 3;

interface State {
  trusted: boolean;
  authFailures: number;
}

/** An IPv4 client of a dual-stack listener as the plain IPv4 address, as smtp-server names it in sessions. */
function plainIp(ip: string): string {
  return ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
}

/** Loopback clients may AUTH before STARTTLS: their traffic never leaves the machine. */
export const defaultIsLoopback = isLoopback;

/** smtp-server reports a handler error with `responseCode`; the text carries our enhanced code. */
export function toServerError(e: SmtpError): Error & { responseCode: number } {
  return Object.assign(new Error(`${e.enhanced} ${e.message}`), { responseCode: e.code });
}

export class SessionHooks {
  readonly guard: AuthGuard;
  readonly connections: ConnectionCounter;
  private states = new Map<string, State>();
  /** each transaction's recipient keys, by its rcptTo array (gone with the transaction) */
  private envelopeKeys = new WeakMap<SMTPServerAddress[], Set<string>>();
  /** "ip:port" of each admitted TCP connection → releases its place in `connections` (once) */
  private openSockets = new Map<string, () => void>();
  private isLoopback: (ip: string) => boolean;
  private limits: PolicyLimits;
  private counters: ReturnType<typeof sessionMetrics>;

  constructor(private deps: SessionDeps) {
    this.counters = sessionMetrics(deps.metrics ?? new Metrics());
    this.limits = {
      maxMessageSize: deps.smtp.max_message_size,
      maxRecipients: deps.smtp.max_recipients,
      maxHops: deps.smtp.max_hops,
      allowAddressLiterals: deps.smtp.allow_address_literals,
    };
    this.guard = new AuthGuard({ failuresBeforeBlock: deps.smtp.auth_failures_before_block, blockMs: deps.smtp.auth_block_time });
    this.connections = new ConnectionCounter(deps.smtp.max_connections_per_ip, deps.smtp.max_connections);
    this.isLoopback = deps.isLoopback ?? defaultIsLoopback;
  }

  /** A reload (SIGHUP): who is trusted, and whether AUTH needs TLS, hold from the next connection or command on. */
  reconfigure(change: Pick<SmtpConfig, "trusted_networks" | "auth_requires_tls">): void {
    this.deps = { ...this.deps, smtp: { ...this.deps.smtp, ...change } };
  }

  isTrusted(ip: string): boolean {
    return this.deps.smtp.trusted_networks.some((c: Cidr) => cidrContains(c, ip));
  }

  /** AUTH may be offered on this session now (TLS, or loopback, or TLS not required). */
  authAllowed(session: SMTPServerSession): boolean {
    return !this.deps.smtp.auth_requires_tls || session.secure || this.isLoopback(session.remoteAddress);
  }

  onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const ip = session.remoteAddress;
    const trusted = this.isTrusted(ip);
    const blocked = this.guard.blockedFor(clientKey(ip));
    // a trusted client relays without AUTH, so refusing its connection protects nothing and would stop every
    // local app because one of them has a wrong password; its AUTH attempts are still refused while blocked
    if (blocked > 0 && !trusted) {
      this.counters.refused.inc({ reason: "auth_blocked" });
      this.deps.log.info("smtp_refused", { client_ip: ip, reason: "auth_blocked", seconds_left: Math.ceil(blocked / 1000) });
      return cb(toServerError(blockedError(this.deps.hostname)));
    }
    this.states.set(session.id, { trusted, authFailures: 0 });
    // not advertised and not accepted until STARTTLS: the EHLO list comes from the session's disabled commands
    if (!this.authAllowed(session)) session.disabledCommands = ["AUTH"];
    cb();
  }

  onSecure(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    if (this.authAllowed(session)) session.disabledCommands = undefined;
    cb();
  }

  onClose(session: SMTPServerSession): void {
    this.openSockets.get(`${session.remoteAddress}:${session.remotePort}`)?.();
    this.states.delete(session.id);
  }

  /**
   * max_connections and max_connections_per_ip (an IPv6 client by its /64), counted when the TCP connection is
   * accepted: on an implicit-TLS listener onConnect runs only after the handshake, so sockets that never send a
   * TLS hello would otherwise pile up uncounted. Over a limit the socket is closed at once, with a 421 on a plain
   * listener; before a TLS handshake nothing can be said, so it is just closed (and logged).
   * Returns whether smtp-server may take the socket.
   */
  admitSocket(socket: net.Socket, implicitTls: boolean): boolean {
    const ip = plainIp(socket.remoteAddress ?? "");
    const client = clientKey(ip);
    const refused = this.connections.tryOpen(client);
    if (refused) {
      socket.on("error", () => {}); // a reset while we close it is no error of ours, and must not crash us
      this.counters.refused.inc({ reason: refused });
      this.deps.log.info("smtp_refused", { client_ip: ip, reason: refused, tls: implicitTls });
      const whose = refused === "max_connections" ? "" : " from your address";
      if (implicitTls) socket.destroy();
      else socket.end(`421 4.7.0 ${this.deps.hostname} too many connections${whose}, try again later\r\n`);
      return false;
    }
    // Bun does not always report 'close' on the TCP socket once TLS wraps it, so the session's
    // onClose releases the place too (whichever comes first; the connection's ip:port names it)
    const key = `${ip}:${socket.remotePort}`;
    const release = () => {
      if (this.openSockets.delete(key)) this.connections.close(client);
    };
    this.openSockets.set(key, release);
    socket.once("close", release);
    return true;
  }

  onAuth(
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): void {
    this.authenticate(auth, session).then(
      (user) => cb(null, { user }),
      (e: unknown) => cb(toServerError(e instanceof SmtpError ? e : new SmtpError(454, "4.7.0", "temporary authentication failure"))),
    );
  }

  /**
   * At most auth_failures_before_block guesses per client are verified within auth_block_time, however many
   * arrive at once: each takes a place from the guard before the slow hash (smtp/auth-guard.ts). A login the
   * credential cache already knows is no guess and takes none. A blocked client gets 421 before anything is checked.
   */
  private async authenticate(auth: SMTPServerAuthentication, session: SMTPServerSession): Promise<User> {
    const ip = session.remoteAddress;
    const client = clientKey(ip);
    if (this.guard.blockedFor(client) > 0) throw blockedError(this.deps.hostname);
    // not reached while onConnect disables AUTH (530 comes first); kept so credentials never cross in clear if that changes
    if (!this.authAllowed(session)) throw new SmtpError(538, "5.7.11", "encryption required for requested authentication mechanism");
    const name = auth.username ?? "";
    const password = auth.password ?? "";
    // RFC 4616 authzid: we do not let one user act for another
    const proxying = auth.method === "PLAIN" && auth.authzid && auth.authcid && auth.authzid !== auth.authcid;
    const outcome = proxying ? this.guard.recordFailure(client) : await this.guess(client, name, password);
    if ("user" in outcome) {
      this.deps.log.info("smtp_auth", { client_ip: ip, user: outcome.user.name, method: auth.method, tls: session.secure });
      return outcome.user;
    }
    const state = this.states.get(session.id);
    const perConnection = state ? ++state.authFailures : 1;
    const { failures, blocked } = outcome;
    this.counters.authFailures.inc();
    // one line a fail2ban filter can match: "event":"smtp_auth_failed" … "client_ip":"<HOST>"
    this.deps.log.warn("smtp_auth_failed", { client_ip: ip, user: name, method: auth.method, failures, blocked });
    if (blocked) throw blockedError(this.deps.hostname);
    if (perConnection >= AUTH_FAILURES_PER_CONNECTION) {
      throw new SmtpError(421, "4.7.0", `${this.deps.hostname} too many authentication failures, closing connection`);
    }
    throw new SmtpError(535, "5.7.8", "authentication credentials invalid");
  }

  /** One password check: a login the cache knows, or a guess verified in a place the guard gives (421 when none). */
  private async guess(client: string, name: string, password: string): Promise<{ user: User } | { failures: number; blocked: boolean }> {
    const known = this.deps.credentials.cached?.(name, password);
    if (known) return { user: known };
    const slot = await this.guard.reserve(client);
    if (!slot) throw blockedError(this.deps.hostname); // blocked, perhaps by the guesses it waited for
    let user: User | null;
    try {
      user = await this.deps.credentials.check(name, password);
    } catch (e) {
      slot.release(); // not verified: no failure to count
      throw e;
    }
    if (!user) return slot.fail();
    slot.release();
    return { user };
  }

  onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const sender = address.address;
    let canonical = "";
    if (sender !== "") {
      const parts = checkAddress(sender, "5.1.7");
      if (parts instanceof SmtpError) return cb(this.reject(session, "MAIL", sender, parts));
      canonical = parts.canonical;
    }
    const user = session.user as User | undefined;
    try {
      if (user) checkSender(user.domains, canonical);
    } catch (e) {
      if (e instanceof SmtpError) return cb(this.reject(session, "MAIL", sender, e));
      throw e;
    }
    // smtp-server stores this object after we return: what is queued is the canonical form (A-label domain)
    address.address = canonical;
    cb();
  }

  onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const rcpts = session.envelope.rcptTo;
    const keys = this.mailboxesOf(rcpts);
    // a repeated mailbox replaces its earlier entry (below), so only a new one can pass the limit
    if (rcpts.length >= this.deps.smtp.max_recipients && !keys.has(addressKey(address.address))) {
      try {
        checkRecipientCount(rcpts.length + 1, this.limits); // the API's refusal, word for word
      } catch (e) {
        if (e instanceof SmtpError) return cb(this.reject(session, "RCPT", address.address, e));
        throw e;
      }
    }
    const client = { authenticated: Boolean(session.user), trusted: this.states.get(session.id)?.trusted ?? false };
    const first = rcpts[0];
    const kind = first ? kindOf(first.address, this.deps.relay.bounceDomain) : undefined;
    const verdict = decideRecipient(address.address, client, this.deps.relay, kind);
    if (!verdict.ok) {
      if (verdict.error.enhanced === "5.7.1") this.counters.relayDenied.inc();
      return cb(this.reject(session, "RCPT", address.address, verdict.error));
    }
    try {
      checkRecipientDomain(verdict.address, this.limits); // intake's refusal, word for word
    } catch (e) {
      if (e instanceof SmtpError) return cb(this.reject(session, "RCPT", address.address, e));
      throw e;
    }
    if (verdict.kind === "bounce_domain" && declaredSize(session) > this.deps.bounceMaxSize) {
      return cb(this.reject(session, "RCPT", address.address, bounceTooBig(this.deps.bounceMaxSize)));
    }
    // smtp-server stores this object after we return: the bare <postmaster> becomes a full address, the rest
    // their canonical form (an IDN domain back in the A-labels the client most likely sent, needless quotes gone)
    address.address = verdict.address;
    // smtp-server replaces only an exact repeat; another spelling of a mailbox already in the envelope
    // (`"FOO"@x`, `foo@X`) replaces it here, so the envelope, and max_recipients, count mailboxes as intake does
    const key = verdict.address.toLowerCase(); // a canonical form's key
    if (keys.has(key)) {
      const earlier = rcpts.findIndex((r) => r.address.toLowerCase() === key);
      if (earlier >= 0) rcpts.splice(earlier, 1);
    }
    keys.add(key);
    cb();
  }

  /** The keys (mail/address.ts) of an envelope's recipients. smtp-server starts a new array per transaction. */
  private mailboxesOf(rcpts: SMTPServerAddress[]): Set<string> {
    let keys = this.envelopeKeys.get(rcpts);
    if (!keys) this.envelopeKeys.set(rcpts, (keys = new Set()));
    return keys;
  }

  private reject(session: SMTPServerSession, command: "MAIL" | "RCPT", address: string, e: SmtpError): Error {
    this.deps.log.info("smtp_reject", {
      client_ip: session.remoteAddress,
      user: (session.user as User | undefined)?.name ?? null,
      command,
      address,
      reply: e.toString(),
    });
    return toServerError(e);
  }
}

/** The SIZE= the client declared at MAIL FROM (RFC 1870), or 0. */
export function declaredSize(session: SMTPServerSession): number {
  const args = session.envelope.mailFrom ? session.envelope.mailFrom.args : false;
  const size = args ? Number(args.SIZE) : 0;
  return Number.isFinite(size) ? size : 0;
}

/** Anyone may write to the bounce domain, so it takes small messages only (a report, not a mailbox). */
export function bounceTooBig(limit: number): SmtpError {
  return new SmtpError(552, "5.3.4", `message exceeds the bounce domain's maximum message size (${limit} bytes)`);
}

function blockedError(hostname: string): SmtpError {
  return new SmtpError(421, "4.7.0", `${hostname} too many failed authentications from your address, try again later`);
}
