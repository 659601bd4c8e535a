/**
 * @module smtp/data — the DATA phase: read the message (size counted on the real bytes), add our
 * Received line, hand it to intake.accept — or, for the bounce domain, to bounce/ingest (consumed there,
 * never queued for relay) — and answer 250 only after the commit returned.
 *
 * Line ends: smtp-server ends DATA only on <CRLF>.<CRLF> (smtp-stream.js compares the five bytes);
 * a bare LF or CR inside the message stays inside it and becomes CRLF, so no line end of ours can later be
 * read as a second message; NUL is refused by intake/prepare with 554 5.6.0.
 *
 * Memory: the message is written once, as it arrives, into one buffer (message/line-ends LineEndWriter: line
 * ends made CRLF by intake/prepare's rule, which then finds nothing to change), sized from SIZE= (without it:
 * 64 KiB first, then the limit), with room in front where prepare writes the new header block: about one
 * copy of each message in flight, where chunks, their concatenation, a normalised copy and a joined copy were four.
 */
import { receivedField } from "../message/headers.ts";
import type { SMTPServerDataStream, SMTPServerSession } from "smtp-server";
import type { User } from "../auth/users.ts";
import type { BounceIngest } from "../bounce/ingest.ts";
import { dedupe, type Intake } from "../intake/accept.ts";
import { SmtpError } from "../mail/errors.ts";
import type { Logger } from "../observe/log.ts";
import { LineEndWriter } from "../message/line-ends.ts";
import type { Counter, Metrics } from "../observe/metrics.ts";
import { kindOf } from "./relay.ts";
import { bounceTooBig, declaredSize, toServerError } from "./session.ts";

/** Messages answered at the end of DATA, by result (one counter shared by every listener). */
export function dataMetrics(metrics: Metrics): Counter<"result"> {
  return metrics.counter({
    name: "outpost_smtp_messages_total",
    help: "Messages answered at the end of DATA, by result (accepted: 250; refused: 4xx/5xx).",
    labelNames: ["result"],
    initial: [{ result: "accepted" }, { result: "refused" }],
  });
}

/** The part of bounce/ingest the SMTP listener uses. */
export type BounceSink = Pick<BounceIngest, "receive" | "isValidToken" | "maxSize">;

export interface DataDeps {
  intake: Intake;
  bounces: BounceSink;
  /** tracking.bounce_domain ("" for none) */
  bounceDomain: string;
  hostname: string;
  maxMessageSize: number;
  log: Logger;
  /** dataMetrics(): accepted or refused */
  messages: Counter<"result">;
}

type DataCallback = (err?: Error | null, message?: string) => void;

/** Free bytes kept in front of a received message for the header block intake rewrites (our Received line, a Message-ID …). */
export const HEADER_ROOM = 8192;

/** Capacity for a message sent without SIZE= (most clients' mail fits; larger grows by doubling). */
const UNDECLARED_START = 64 * 1024;

/** A received message: CRLF line ends, HEADER_ROOM free bytes before it; `sentSize` is what the client sent. */
interface Received {
  bytes: Buffer;
  sentSize: number;
}

/** smtp-server's onData: reply text "2.0.0 Ok: queued as ID" once the message is durably stored. */
export function receiveMessage(deps: DataDeps, stream: SMTPServerDataStream, session: SMTPServerSession, cb: DataCallback): void {
  const toBounceDomain = isBounceTransaction(session, deps.bounceDomain);
  const limit = toBounceDomain ? Math.min(deps.maxMessageSize, deps.bounces.maxSize) : deps.maxMessageSize;
  const declared = declaredSize(session);
  // an eighth more: bare LFs made CRLF grow a message, and growing the buffer would copy it. Without SIZE=, the
  // whole limit only once UNDECLARED_START is outgrown: reserving it for every message cost a large allocation
  // (mmap, page faults, munmap) per message, where copying the first 64 KiB of a large one costs little
  const most = Math.ceil(Math.min(declared > 0 ? declared : limit, limit) * 1.125);
  const message = new LineEndWriter(declared > 0 ? most : Math.min(most, UNDECLARED_START), HEADER_ROOM, most);
  let kept = 0;
  stream.on("data", (chunk: Buffer) => {
    // past the limit we only count (smtp-server does) and drop, so a huge message costs no memory
    if (kept <= limit) {
      message.write(chunk);
      kept += chunk.length;
    }
  });
  stream.once("error", (e: Error) => {
    logTransaction(deps.log, session, { size: stream.byteLength, result: "aborted", error: e.message });
  });
  stream.once("end", () => {
    const refuse = (e: SmtpError) => {
      deps.messages.inc({ result: "refused" });
      logTransaction(deps.log, session, { size: stream.byteLength, result: e.toString() });
      cb(toServerError(e));
    };
    if (stream.sizeExceeded) {
      return refuse(new SmtpError(552, "5.3.4", `message exceeds fixed maximum message size (${deps.maxMessageSize} bytes)`));
    }
    if (toBounceDomain && stream.byteLength > limit) return refuse(bounceTooBig(limit));
    const save = toBounceDomain ? consume : store;
    save(deps, session, { bytes: message.finish(), sentSize: stream.byteLength }).then(
      (reply) => cb(null, reply),
      (e: SmtpError) => cb(toServerError(e)),
    );
  });
}

/** Ordinary mail: through intake into the queue. "250 2.0.0 Ok: queued as ID". */
function store(deps: DataDeps, session: SMTPServerSession, received: Received): Promise<string> {
  const size = received.sentSize;
  const user = session.user as User | undefined;
  const mailFrom = session.envelope.mailFrom;
  return answer(deps, session, size, async () => {
    const queued = await deps.intake.accept({
      userId: user?.id ?? null,
      allowedDomains: user ? user.domains : null,
      envelopeFrom: mailFrom ? mailFrom.address : "",
      recipients: envelopeRecipients(session),
      raw: received.bytes,
      sentSize: size,
      room: HEADER_ROOM,
      trace: receivedHeader(session, deps.hostname),
      source: "smtp",
    });
    return { reply: `2.0.0 Ok: queued as ${queued.id}`, log: { queue_id: queued.id, message_id: queued.messageIdHeader } };
  });
}

/** Mail for the bounce domain: processed and kept by bounce/ingest, never queued. "250 2.0.0 Ok: received as ID". */
function consume(deps: DataDeps, session: SMTPServerSession, received: Received): Promise<string> {
  const mailFrom = session.envelope.mailFrom;
  return answer(deps, session, received.sentSize, async () => {
    const got = await deps.bounces.receive({
      recipients: envelopeRecipients(session),
      mailFrom: mailFrom ? mailFrom.address : "",
      clientIp: session.remoteAddress,
      raw: received.bytes,
      trace: receivedHeader(session, deps.hostname),
    });
    return { reply: `2.0.0 Ok: received as ${got.id}`, log: { inbound_id: got.id, outcome: got.outcome } };
  });
}

/** Counts and logs the answer of a save that resolves only after its commit. */
async function answer(
  deps: DataDeps,
  session: SMTPServerSession,
  size: number,
  save: () => Promise<{ reply: string; log: Record<string, unknown> }>,
): Promise<string> {
  try {
    const { reply, log } = await save();
    deps.messages.inc({ result: "accepted" });
    logTransaction(deps.log, session, { ...log, size, result: `250 ${reply}` });
    return reply;
  } catch (e) {
    // anything unexpected is temporary: the client keeps the message and retries, nothing is lost
    const err = e instanceof SmtpError ? e : new SmtpError(451, "4.3.0", "temporary failure storing the message, try again", e);
    deps.messages.inc({ result: "refused" });
    logTransaction(deps.log, session, { size, result: err.toString(), error: e instanceof SmtpError ? undefined : e });
    throw err;
  }
}

/** Every recipient of a transaction is of one kind (smtp/relay.ts), so the first one tells. */
function isBounceTransaction(session: SMTPServerSession, bounceDomain: string): boolean {
  const first = session.envelope.rcptTo[0];
  return first !== undefined && kindOf(first.address, bounceDomain) === "bounce_domain";
}

/**
 * The envelope's recipients, each once, as intake will store them (its dedupe: one canonical form per mailbox).
 * onRcptTo already keeps one entry per mailbox; this keeps the log line true to what is stored whatever the envelope holds.
 */
function envelopeRecipients(session: SMTPServerSession): string[] {
  return dedupe(session.envelope.rcptTo.map((r) => r.address));
}

/** One JSON line per transaction (docs/logs.md). */
function logTransaction(log: Logger, session: SMTPServerSession, fields: Record<string, unknown>): void {
  const mailFrom = session.envelope.mailFrom;
  log.info("smtp_message", {
    queue_id: null,
    message_id: null,
    client_ip: session.remoteAddress,
    user: (session.user as User | undefined)?.name ?? null,
    sender: mailFrom ? mailFrom.address : null,
    recipients: envelopeRecipients(session),
    tls: session.secure ? (session.tlsOptions ? session.tlsOptions.version || session.tlsOptions.name : true) : false,
    ...fields,
  });
}

/**
 * RFC 5321 §4.4 trace line. It also lets a mail loop be seen (the DSN rules count Received lines).
 * The user name is not written: Postfix's default too (smtpd_sasl_authenticated_header = no).
 */
export function receivedHeader(session: SMTPServerSession, hostname: string, now = new Date()): Buffer {
  const helo = safe(session.hostNameAppearsAs || "unknown");
  const proto = session.transmissionType || "ESMTP";
  const tls = session.secure && session.tlsOptions ? ` (${safe(session.tlsOptions.version)} ${safe(session.tlsOptions.name)})` : "";
  return receivedField({ from: `${helo} ([${session.remoteAddress}])`, by: hostname, with: proto + tls, at: now });
}

/** Keeps client-supplied words inside a header: no line breaks, no parentheses that would unbalance the comment. */
function safe(s: string): string {
  return s.replace(/[^\x21-\x7e]/g, "?").replace(/[()]/g, "?");
}
