/**
 * @module delivery/transport — SMTP sessions to a destination's hosts through nodemailer's smtp-connection
 * (the only importer of that library).
 *
 * connect(dest): tries dest.hosts in order (each host's addresses, IPv4 first, at most MAX_ADDRESSES in all, as
 * Postfix's smtp_mx_address_limit), and returns the first session that greets, says EHLO, gets through STARTTLS
 * per policy and AUTH when the route has it. Every host failing → ConnectFailure (temporary), with
 * throttleSignal set when a host refused the connection or greeted 421 (the destination wants fewer of us).
 *
 * Mail loops: an MX host's address that is one of outpost's own listeners on the port dialled (isOwnAddress) is
 * skipped, never dialled: connecting would hand the mail to ourselves, and we would relay it to ourselves again
 * until the hop limit. When every host of the destination resolved to our own addresses only, the failure is
 * LoopsBackToMyself (permanent, 5.4.6). Static routes are exempt: one pointing at ourselves is on purpose (a
 * test set-up, or another outpost instance on this machine), and the hop limit at intake ends any loop it makes.
 *
 * TLS (see docs/delivery-routing.md):
 *  - "opportunistic": STARTTLS whenever offered, certificate NOT verified (Postfix `may`: encryption against
 *    passive listening; verifying would make mail to every self-signed MX bounce or stall, and without DANE or
 *    MTA-STS there is nothing to verify against). A refused STARTTLS continues in clear (smtp-connection's
 *    opportunisticTLS); a failed handshake is retried once on a new connection without STARTTLS.
 *  - "required": STARTTLS must succeed, else this host fails (ConnectFailure → the recipients are deferred with
 *    the reason). Also unverified (Postfix `encrypt`).
 *  - "verify" (static routes; the default for one with credentials): as "required", and the certificate chain
 *    must lead to a trusted CA (the system's, or the route's `tls_ca`) and name the route's host (Postfix
 *    `secure`). A certificate that does not verify fails the host before anything else is said: a man in the
 *    middle never sees AUTH.
 *  The stricter of the transport's and the destination's policy applies.
 *  - AUTH credentials go only over TLS or to a loopback address.
 */
import { isLoopback } from "../config/units.ts";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { RouteTlsPolicy, TlsPolicy } from "../config/schema.ts";
import type { Logger } from "../observe/log.ts";
import { fastDataStream, localReply, nonAscii, resultsFor, transact, type LibError } from "./attempt.ts";
import { systemLookup } from "./resolver.ts";
import type { OwnAddress } from "./own-addresses.ts";
import { ConnectFailure, LoopsBackToMyself, type Connection, type Destination, type OutboundMessage, type RecipientResult, type Transport } from "./types.ts";

export interface TransportTimeouts {
  /** TCP connect, ms (default 30 s, Postfix smtp_connect_timeout) */
  connectMs?: number;
  /** greeting, and each step of setting the session up, ms (default 60 s) */
  greetingMs?: number;
  /** no bytes from the server for this long during a session, ms (default 300 s: a DATA reply may be slow) */
  socketMs?: number;
  /** QUIT's reply, ms (default 2 s) */
  quitMs?: number;
}

export interface SmtpTransportOptions {
  /** EHLO name */
  hostname: string;
  /** the default policy (`delivery.tls`); a destination's own policy applies when stricter */
  tls: TlsPolicy;
  log: Logger;
  timeouts?: TransportTimeouts;
  /** host name → addresses; default the system's lookup. Production: `lookupVia(resolver)`; tests map to 127.0.0.x */
  lookup?: (host: string) => Promise<string[]>;
  /** port for MX hosts (default: the host's, 25); static routes keep their own */
  connectPort?: number;
  /** is ip:port one of outpost's own SMTP listeners (delivery/own-addresses.ts)? Such addresses are never dialled for MX hosts */
  isOwnAddress?: OwnAddress;
}

const MAX_ADDRESSES = 5;

/** try: opportunistic; require: encrypted, unverified; verify: encrypted and verified; off: in clear (the fallback) */
type TlsMode = "try" | "require" | "verify" | "off";

const MODES: Record<RouteTlsPolicy, TlsMode> = { opportunistic: "try", required: "require", verify: "verify" };
const STRICTNESS: Record<RouteTlsPolicy, number> = { opportunistic: 0, required: 1, verify: 2 };

interface OpenFailure {
  reason: string;
  throttle: boolean;
  code: number;
  /** the TLS handshake failed after STARTTLS: worth one try in clear when TLS is optional */
  tlsFailed: boolean;
}

export class SmtpTransport implements Transport {
  private readonly t: Required<TransportTimeouts>;
  private readonly lookup: (host: string) => Promise<string[]>;

  constructor(private readonly opts: SmtpTransportOptions) {
    const t = opts.timeouts ?? {};
    this.t = { connectMs: t.connectMs ?? 30_000, greetingMs: t.greetingMs ?? 60_000, socketMs: t.socketMs ?? 300_000, quitMs: t.quitMs ?? 2_000 };
    this.lookup = opts.lookup ?? systemLookup;
  }

  async connect(dest: Destination): Promise<Connection> {
    const mode = MODES[STRICTNESS[dest.tls] >= STRICTNESS[this.opts.tls] ? dest.tls : this.opts.tls];
    const failures: string[] = [];
    let throttle = false;
    let code = 0;
    let lastMx: string | undefined;
    let budget = MAX_ADDRESSES;
    // two MX names for one server (mx1 and mx2 both at 192.0.2.7) are one attempt, not two (Postfix too)
    const tried = new Set<string>();
    // hosts whose every address is one of our own listeners (skipped: see the module comment)
    let selfHosts = 0;
    for (const h of dest.hosts) {
      if (budget <= 0) break;
      const port = dest.static ? h.port : (this.opts.connectPort ?? h.port);
      lastMx = h.host;
      let addresses: string[];
      try {
        addresses = orderAddresses(await within(this.lookup(h.host), this.t.connectMs, "address lookup timed out"));
      } catch (e) {
        failures.push(`${h.host}: address lookup failed (${errText(e)})`);
        continue;
      }
      if (addresses.length === 0) failures.push(`${h.host}: no address`);
      const own = dest.static ? [] : addresses.filter((a) => this.isOwn(a, port));
      if (own.length > 0) {
        failures.push(`${h.host}[${own.join(", ")}]:${port}: our own address, skipped`);
        if (own.length === addresses.length) selfHosts++;
      }
      for (const ip of addresses.filter((a) => !own.includes(a) && !tried.has(`${a}:${port}`)).slice(0, budget)) {
        tried.add(`${ip}:${port}`);
        budget--;
        const r = await this.open(dest, h.host, ip, port, mode);
        if (r instanceof SmtpSession) return r;
        failures.push(`${h.host}[${ip}]:${port}: ${r.reason}`);
        throttle ||= r.throttle;
        if (r.code) code = r.code;
      }
    }
    // every host answered its lookup, and with our own addresses only: no retry can do better
    if (selfHosts > 0 && selfHosts === dest.hosts.length) throw new LoopsBackToMyself(dest.key, lastMx);
    const why = failures.length > 0 ? failures.join("; ") : "no hosts to try";
    this.opts.log.debug("delivery.connect_failed", { destination: dest.key, reason: why, throttle });
    throw new ConnectFailure(`could not connect to ${dest.key}: ${why}`, throttle, code, lastMx);
  }

  private isOwn(ip: string, port: number): boolean {
    return this.opts.isOwnAddress?.(ip, port) ?? false;
  }

  /** One address; an opportunistic session whose TLS handshake failed gets one more try in clear. */
  private async open(dest: Destination, host: string, ip: string, port: number, mode: TlsMode): Promise<SmtpSession | OpenFailure> {
    const first = await this.session(dest, host, ip, port, mode);
    if (first instanceof SmtpSession || mode !== "try" || !first.tlsFailed) return first;
    this.opts.log.warn("delivery.tls_fallback", { mx: host, ip, reason: first.reason });
    const second = await this.session(dest, host, ip, port, "off");
    if (second instanceof SmtpSession) return second;
    return { ...second, reason: `${first.reason}; in clear: ${second.reason}` };
  }

  private async session(dest: Destination, host: string, ip: string, port: number, mode: TlsMode): Promise<SmtpSession | OpenFailure> {
    const servername = isIP(host) ? undefined : host;
    let ca: string | undefined;
    try {
      // read at each connection: a renewed CA file is used without a restart
      if (mode === "verify" && dest.tlsCa) ca = readFileSync(dest.tlsCa, "utf8");
    } catch (e) {
      return { reason: `cannot read tls_ca ${dest.tlsCa}: ${errText(e)}`, throttle: false, code: 0, tlsFailed: false };
    }
    const conn = new SMTPConnection({
      host: ip,
      port,
      name: this.opts.hostname,
      servername,
      requireTLS: mode === "require" || mode === "verify",
      opportunisticTLS: mode === "try",
      ignoreTLS: mode === "off",
      // unverified unless the policy says verify, see the module comment; an IP literal host is checked as an IP
      tls: mode === "verify" ? { rejectUnauthorized: true, servername, ca } : { rejectUnauthorized: false, servername },
      connectionTimeout: this.t.connectMs,
      greetingTimeout: this.t.greetingMs,
      socketTimeout: this.t.socketMs,
      // after our side is closed, wait for the server's at most as long as for its QUIT reply (the library's 5 s
      // would keep a stopping process alive past serve's 30 s when a receiver hangs)
      socketCloseTimeout: this.t.quitMs,
      logger: false,
    });
    fastDataStream(conn);
    let lateError: LibError | undefined;
    conn.on("error", (e: LibError) => (lateError = e)); // an 'error' without a listener would throw
    try {
      await new Promise<void>((resolve, reject) => {
        conn.once("error", reject);
        conn.once("end", () => reject(lateError ?? new Error("connection closed")));
        conn.connect((err) => (err ? reject(err) : resolve()));
      });
      if ((mode === "require" || mode === "verify") && !conn.secure) throw new Error("TLS required but the session is not encrypted");
      if (dest.auth) await this.login(conn, ip, dest);
    } catch (e) {
      const err = e as LibError;
      // the handshake failed, or the session broke right after it (not a refused login, not a busy server)
      const afterTls = conn.secure && !/^AUTH/i.test(err.command ?? "") && !/^AUTH/.test(err.code ?? "") && err.responseCode !== 421;
      const tlsBroke = err.code === "ETLS" || conn.upgrading === true || afterTls;
      conn.close();
      return failure(err, mode, tlsBroke);
    }
    this.opts.log.debug("delivery.connected", { destination: dest.key, mx: host, ip, port, tls: conn.secure });
    return new SmtpSession(conn, host, conn.secure, this.t, () => lateError);
  }

  private async login(conn: SMTPConnection, ip: string, dest: Destination): Promise<void> {
    if (!conn.secure && !isLoopback(ip)) throw new Error("refusing to send AUTH credentials without TLS");
    const login = new Promise<void>((resolve, reject) =>
      conn.login({ user: dest.auth!.user, pass: dest.auth!.pass }, (err) => (err ? reject(err) : resolve())),
    );
    await within(login, this.t.greetingMs, "no reply to AUTH in time").catch((e: LibError) => {
      throw Object.assign(e, { code: e.code ?? "EAUTH" });
    });
  }
}

/** node:tls's codes for a certificate that does not verify (untrusted chain, self-signed, expired, wrong name) */
const CERTIFICATE_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY|DECRYPT)|ALTNAME/;

function failure(e: LibError, mode: TlsMode, tlsFailed: boolean): OpenFailure {
  const sys = e.originalCode ?? e.code;
  const refused = sys === "ECONNREFUSED";
  const code = e.responseCode ?? 0;
  let reason = refused ? "connection refused" : (e.response ?? e.message).trim();
  if ((mode === "require" || mode === "verify") && (tlsFailed || /TLS required/.test(e.message))) {
    const refusedStarttls = e.code === "ETLS" && e.command === "STARTTLS" && e.response;
    reason = refusedStarttls
      ? `TLS required but STARTTLS was refused (${e.response!.trim()})`
      : mode === "verify" && CERTIFICATE_ERROR.test(sys ?? "")
        ? `TLS required but the server's certificate did not verify (${e.message.trim()})`
        : `TLS required but the TLS session failed (${(e.response ?? e.message).trim()})`;
  }
  return { reason, throttle: refused || code === 421, code, tlsFailed };
}

/** An open session; one transaction at a time. */
export class SmtpSession implements Connection {
  sent = 0;
  private busy = false;
  private broken = false;
  /** the server offered SMTPUTF8 (its EHLO reply is final once the session is set up) */
  private readonly smtpUtf8: boolean;

  constructor(
    private readonly conn: SMTPConnection,
    readonly mx: string,
    /** the session runs over TLS */
    readonly tls: boolean,
    private readonly t: Required<TransportTimeouts>,
    private readonly lastError: () => Error | undefined,
  ) {
    // smtp-connection keeps the EHLO extensions in a private field; unknown → assume what we need is there
    const ext = (conn as unknown as { _supportedExtensions?: string[] })._supportedExtensions;
    this.smtpUtf8 = ext?.includes("SMTPUTF8") ?? true;
  }

  get usable(): boolean {
    return !this.broken && !this.busy && !this.conn.destroyed;
  }

  async send(msg: OutboundMessage): Promise<RecipientResult[]> {
    if (this.busy || this.broken || this.conn.destroyed) {
      const why = this.lastError()?.message ?? "the session is closed";
      return resultsFor(msg, this.mx, () => localReply(`not sent: ${why}`));
    }
    const { sendable, refused } = this.screen(msg);
    if (sendable.recipients.length === 0) return refused;
    this.busy = true;
    try {
      // the library's socket timeout catches a silent server; this bounds a server that trickles bytes forever
      const end = await transact(this.conn, sendable, this.mx, 3 * this.t.socketMs);
      this.sent++;
      if (end.session === "reset") await this.reset();
      else if (end.session === "close") this.drop();
      return inOrder(msg, [...end.results, ...refused]);
    } catch (e) {
      // not expected (the library reports through its callback), but send() must never throw
      this.drop();
      const failed = resultsFor(sendable, this.mx, () => localReply(`not sent: ${e instanceof Error ? e.message : String(e)}`));
      return inOrder(msg, [...failed, ...refused]);
    } finally {
      this.busy = false;
    }
  }

  /**
   * Splits off what this session must not carry because it would be mangled or refused the same way on every
   * try: a NUL byte, an address with CR, LF, "<" or ">", a non-ASCII address for a server without SMTPUTF8.
   */
  private screen(msg: OutboundMessage): { sendable: OutboundMessage; refused: RecipientResult[] } {
    const all = (enhanced: string, why: string) => ({
      sendable: { ...msg, recipients: [] },
      refused: resultsFor(msg, this.mx, () => localReply(why, enhanced)),
    });
    const utf8 = this.smtpUtf8;
    if (msg.body.includes(0)) return all("5.6.0", "message contains NUL bytes");
    if (BAD_ADDRESS.test(msg.envelopeFrom)) return all("5.1.7", "invalid sender address syntax");
    if (nonAscii(msg.envelopeFrom) && !utf8) return all("5.6.7", `${this.mx} does not support SMTPUTF8, needed for the sender's address`);
    const keep: OutboundMessage["recipients"] = [];
    const refused: RecipientResult[] = [];
    for (const r of msg.recipients) {
      const why = BAD_ADDRESS.test(r.address) || r.address.trim() === ""
        ? { ...localReply("invalid recipient address syntax", "5.1.3"), own: true }
        : nonAscii(r.address) && !utf8
          ? localReply(`${this.mx} does not support SMTPUTF8, needed for this address`, "5.6.7")
          : null;
      if (why) refused.push(...resultsFor({ ...msg, recipients: [r] }, this.mx, () => why));
      else keep.push(r);
    }
    return { sendable: { ...msg, recipients: keep }, refused };
  }

  private reset(): Promise<void> {
    return new Promise((resolve) => {
      const guard = setTimeout(() => {
        this.drop();
        resolve();
      }, this.t.greetingMs);
      this.conn.reset((err) => {
        clearTimeout(guard);
        if (err) this.drop();
        resolve();
      });
    });
  }

  private drop(): void {
    this.broken = true;
    this.conn.close();
  }

  async close(): Promise<void> {
    if (this.conn.destroyed) return;
    if (this.busy) {
      // a transaction is in flight (shutdown): cut it; its send() resolves with deferred results
      this.drop();
      return;
    }
    this.broken = true;
    await new Promise<void>((resolve) => {
      const guard = setTimeout(resolve, this.t.quitMs);
      this.conn.once("end", () => {
        clearTimeout(guard);
        resolve();
      });
      try {
        this.conn.quit();
      } catch {
        resolve();
      }
    });
    this.conn.close();
  }
}

const BAD_ADDRESS = /[\r\n<>]/;

/** Results in the message's recipient order. */
function inOrder(msg: OutboundMessage, results: RecipientResult[]): RecipientResult[] {
  const byId = new Map(results.map((r) => [r.recipientId, r]));
  return msg.recipients.map((r) => byId.get(r.id)!);
}

/** IPv4 first (more hosts can reach it), order otherwise kept; duplicates dropped. */
function orderAddresses(list: string[]): string[] {
  const unique = [...new Set(list)];
  return [...unique.filter((a) => isIP(a) === 4), ...unique.filter((a) => isIP(a) !== 4)];
}

/** `p`, or a rejection with `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
