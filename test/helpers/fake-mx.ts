/**
 * @module test/helpers/fake-mx — a scripted SMTP receiver (smtp-server, in this process) for delivery tests.
 *
 *   const mx = await startFakeMx({ host: "127.0.0.2", rcpt: { "bad@x.test": "550 5.1.1 no such user" } });
 *   …deliver to 127.0.0.2:mx.port…
 *   expect(mx.messages[0]!.to).toEqual(["good@x.test"]);
 *   await mx.stop();                       // in afterEach/afterAll
 *
 * Script (all optional; `mx.script` stays mutable between transactions):
 *   greeting421   true or a reply text: answer every connection "421 …" and close (a busy or throttling server)
 *   mail          reply to MAIL FROM, e.g. "451 4.3.0 try later" (default 250)
 *   rcpt          per recipient (lower-case address) reply, e.g. { "bad@x.test": "550 5.1.1 no such user" }
 *   rcptDefault   reply for recipients not in `rcpt` (default 250)
 *   data          reply after the message's final dot, a string or (message) => string | undefined (default 250)
 *                 Any reply may be "drop": the socket is cut instead of answering (a connection lost mid-session).
 *   starttls      advertise STARTTLS with smtp-server's built-in self-signed localhost certificate (default false)
 *   certificate   { key, cert } (PEM): the certificate STARTTLS presents instead (a test CA's, test/helpers/test-ca.ts)
 *   tlsFails      with starttls: drop the connection right after the TLS handshake (a broken TLS stack)
 *   auth          { user, pass }: advertise AUTH PLAIN LOGIN and require it before MAIL
 *   smtputf8, eightBitMime   advertise SMTPUTF8 / 8BITMIME (default true)
 *   pipelining    advertise PIPELINING (default true)
 *   size          advertise SIZE with this limit in bytes (default: no SIZE)
 *   maxConnections  smtp-server's maxClients: connections beyond it get "421 … Too many connected clients"
 *   delayMs       wait this long before answering MAIL, each RCPT and the end of DATA (a slow receiver)
 *   greetingDelayMs  wait this long before the greeting (or the 421)
 *
 * Records: `messages` (accepted ones: envelope, raw bytes as received after un-dot-stuffing, TLS, EHLO name),
 * `transactions` (every DATA that reached the final dot, accepted or not), `rcptSeen` (every RCPT address),
 * `authSeen` (the user name of every AUTH that reached it, right or wrong: what a man in the middle would collect),
 * `connections` (TCP connections accepted, including those answered 421), `open` (TCP connections open now) and
 * `maxOpen` (the most that were open at once).
 * Replies are given as "CODE text"; smtp-server writes them verbatim as "CODE text".
 */
import type { Socket } from "node:net";
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from "smtp-server";

export interface ReceivedMessage {
  from: string;
  to: string[];
  raw: Buffer;
  secure: boolean;
  helo: string;
  /** BODY= parameter as the server saw it ("7bit" or "8bitmime") */
  bodyType: string;
  smtpUtf8: boolean;
  /** the session's ordinal transaction number: 1 for the first message on a connection */
  transaction: number;
  sessionId: string;
}

export type DataReply = string | ((msg: ReceivedMessage) => string | undefined);

export interface FakeMxScript {
  greeting421?: boolean | string;
  mail?: string;
  rcpt?: Record<string, string>;
  rcptDefault?: string;
  data?: DataReply;
  starttls?: boolean;
  tlsFails?: boolean;
  certificate?: { key: string; cert: string };
  auth?: { user: string; pass: string };
  smtputf8?: boolean;
  eightBitMime?: boolean;
  pipelining?: boolean;
  size?: number;
  maxConnections?: number;
  delayMs?: number;
  greetingDelayMs?: number;
}

export interface FakeMx {
  host: string;
  port: number;
  script: FakeMxScript;
  messages: ReceivedMessage[];
  transactions: ReceivedMessage[];
  rcptSeen: string[];
  connections: number;
  open: number;
  maxOpen: number;
  /** logins that succeeded */
  logins: string[];
  /** every AUTH that reached the server, by user name */
  authSeen: string[];
  stop(): Promise<void>;
}

class ReplyError extends Error {
  constructor(
    readonly responseCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** "550 5.1.1 no such user" → an error smtp-server answers with; undefined for 2xx (accept). */
function replyError(reply: string | undefined): ReplyError | undefined {
  if (!reply) return undefined;
  const m = /^(\d{3})[ -]?(.*)$/s.exec(reply.trim());
  if (!m) throw new Error(`fake-mx: a reply must start with a code: ${JSON.stringify(reply)}`);
  const code = Number(m[1]);
  return code < 400 ? undefined : new ReplyError(code, m[2] ?? "");
}

export async function startFakeMx(opts: FakeMxScript & { host?: string; port?: number } = {}): Promise<FakeMx> {
  const { host = "127.0.0.1", port = 0, ...script } = opts;
  const sockets = new Map<string, Socket>();
  const mx: FakeMx = {
    host, port: 0, script, messages: [], transactions: [], rcptSeen: [], logins: [], authSeen: [],
    connections: 0, open: 0, maxOpen: 0,
    stop: async () => {
      for (const s of sockets.values()) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  /** Answers after `delayMs`; "drop" cuts the connection instead. */
  const answer = (session: SMTPServerSession, reply: string | undefined, cb: (err?: Error) => void) =>
    setTimeout(() => {
      if (reply === "drop") sockets.get(`${session.remoteAddress}:${session.remotePort}`)?.destroy();
      else cb(replyError(reply));
    }, mx.script.delayMs ?? 0);
  const features = {
    hideSTARTTLS: !script.starttls,
    hidePIPELINING: script.pipelining === false,
    hide8BITMIME: script.eightBitMime === false,
    hideSMTPUTF8: script.smtputf8 === false,
  };
  const options: SMTPServerOptions = {
    ...features,
    ...script.certificate,
    name: `fake-mx.${host}`,
    logger: false,
    disableReverseLookup: true,
    maxClients: script.maxConnections,
    size: script.size,
    authOptional: !script.auth,
    authMethods: ["PLAIN", "LOGIN"],
    allowInsecureAuth: true,
    // hideSTARTTLS only leaves it out of EHLO; a server "without STARTTLS" must also refuse the command
    disabledCommands: [...(script.auth ? [] : ["AUTH"]), ...(script.starttls ? [] : ["STARTTLS"])],
    onConnect(_session, cb) {
      const g = mx.script.greeting421;
      setTimeout(() => cb(g ? new ReplyError(421, typeof g === "string" ? g : "4.7.0 too busy, try again later") : undefined), mx.script.greetingDelayMs ?? 0);
    },
    onSecure(_socket, _session, cb) {
      cb(mx.script.tlsFails ? new ReplyError(454, "4.7.0 TLS not available after all") : undefined);
    },
    onAuth(auth, _session, cb) {
      mx.authSeen.push(auth.username ?? "");
      const want = mx.script.auth;
      if (want && auth.username === want.user && auth.password === want.pass) {
        mx.logins.push(auth.username);
        return cb(null, { user: auth.username });
      }
      cb(new ReplyError(535, "5.7.8 authentication failed"));
    },
    onMailFrom(_address, session, cb) {
      answer(session, mx.script.mail, cb);
    },
    onRcptTo(address, session, cb) {
      const addr = address.address.toLowerCase();
      mx.rcptSeen.push(addr);
      answer(session, mx.script.rcpt?.[addr] ?? mx.script.rcptDefault, cb);
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const msg = received(session, Buffer.concat(chunks));
        mx.transactions.push(msg);
        const d = mx.script.data;
        const reply = typeof d === "function" ? d(msg) : d;
        answer(session, reply, (err) => {
          if (!err) mx.messages.push(msg);
          cb(err);
        });
      });
    },
  };
  const server = new SMTPServer(options);
  // smtp-server keeps its net.Server here; the sockets are needed to cut a connection on cue ("drop")
  const netServer = (server as unknown as { server: import("node:net").Server }).server;
  netServer.on("connection", (s: Socket) => {
    const key = `${s.remoteAddress}:${s.remotePort}`;
    sockets.set(key, s);
    // counted per TCP connection, so refused ones (maxConnections, 421 greeting) count too: what a throttle test needs
    mx.connections++;
    mx.open++;
    mx.maxOpen = Math.max(mx.maxOpen, mx.open);
    s.once("close", () => {
      sockets.delete(key);
      mx.open--;
    });
  });
  server.on("error", () => {}); // client resets are expected in these tests
  await new Promise<void>((resolve, reject) => {
    netServer.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  mx.port = (netServer.address() as import("node:net").AddressInfo).port;
  return mx;
}

function received(session: SMTPServerSession, raw: Buffer): ReceivedMessage {
  const env = session.envelope;
  return {
    from: env.mailFrom ? env.mailFrom.address : "",
    to: env.rcptTo.map((r) => r.address),
    raw,
    secure: session.secure,
    helo: session.hostNameAppearsAs,
    bodyType: env.bodyType ?? "7bit",
    smtpUtf8: env.smtpUtf8 === true,
    transaction: session.transaction,
    sessionId: session.id,
  };
}
