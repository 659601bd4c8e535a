/**
 * @module delivery/types — the seams inside delivery: where mail goes (Router), how it gets there
 * (Transport/Connection), and what came back (RecipientResult). The scheduler (loop.ts) sees only these.
 */
import type { RouteTlsPolicy } from "../config/schema.ts";
import type { MessageId, RecipientId } from "../mail/ids.ts";

/** One server to try, in order. */
export interface MxHost {
  /** host name (or IP literal) as found in MX/route; used for TLS SNI and logs */
  host: string;
  port: number;
  /** MX preference; static routes use 0 */
  preference: number;
}

/** SMTP AUTH for a static route to an upstream smart host. */
export interface RouteAuth {
  user: string;
  pass: string;
}

/**
 * Where a recipient domain's mail goes. `key` names the receiving server set (e.g. "mx1.gmail.com,mx2.gmail.com"
 * or "route:smarthost.example.net:587"): every domain with the same key shares one throttle budget.
 */
export interface Destination {
  key: string;
  /** in the order to try: preference ascending, random among equal */
  hosts: MxHost[];
  /** MX destinations: `delivery.tls`; static routes may also say "verify" (chain and host name checked) */
  tls: RouteTlsPolicy;
  /** with "verify": a PEM file of the CAs to trust instead of the system's */
  tlsCa?: string;
  auth?: RouteAuth;
  /** true for `[[delivery.route]]` destinations */
  static: boolean;
}

export type RouteResult =
  | { kind: "ok"; destination: Destination }
  /** null MX (RFC 7505) or the domain does not exist: bounce now */
  | { kind: "permanent"; enhanced: string; reason: string }
  /** DNS trouble (SERVFAIL, timeout): defer, never bounce */
  | { kind: "temporary"; reason: string };

export interface Router {
  /** Resolves a recipient domain (lower-case) to its destination. Never throws: failures are RouteResults. */
  route(domain: string): Promise<RouteResult>;
}

/** One message to one destination: all its recipients there share the transaction. */
export interface OutboundMessage {
  messageId: MessageId;
  /** MAIL FROM; "" is the null sender */
  envelopeFrom: string;
  recipients: { id: RecipientId; address: string }[];
  /** CRLF message bytes, not dot-stuffed (the transport does that) */
  body: Buffer;
}

export type Outcome = "delivered" | "deferred" | "bounced";

/** What a settle leaves to do once its transaction has committed (log lines): nothing is said before it is durable. */
export type AfterCommit = () => void;

/** What happened to one recipient in one attempt. */
export interface RecipientResult {
  recipientId: RecipientId;
  outcome: Outcome;
  /** SMTP basic code, or 0 when no reply was had (network error, timeout, TLS policy) */
  code: number;
  /** RFC 3463 code such as "5.1.1"; derived from `code` when the server gave none */
  enhanced: string;
  /** the server's reply text, or a description of the local failure */
  reply: string;
  /** the MX host that answered, if any */
  mx?: string;
  /**
   * The reply was about this recipient's own address: its RCPT reply, a local check of the address, or its
   * domain's routing (null MX). Not set for a MAIL FROM or DATA reply that all recipients share.
   */
  aboutRecipient?: boolean;
}

/** Why a connection could not be had (all hosts failed). Temporary, except for LoopsBackToMyself. */
export class ConnectFailure extends Error {
  constructor(
    message: string,
    /** refused / 421 greeting: a signal that the destination wants fewer connections */
    readonly throttleSignal: boolean,
    /** the last reply code seen (421 …), or 0 */
    readonly code = 0,
    readonly mx?: string,
  ) {
    super(message);
  }
}

/**
 * Every address of every host of a destination that is not a static route is one of outpost's own SMTP
 * listeners: sending would hand the mail back to ourselves, and so would every retry. Permanent: the
 * recipients bounce with RFC 3463 5.4.6 (routing loop detected), in Postfix's words.
 */
export class LoopsBackToMyself extends ConnectFailure {
  readonly status = "5.4.6";

  constructor(destination: string, mx?: string) {
    super(`every address of ${destination} is one of our own SMTP listeners`, false, 0, mx);
  }

  /** The reply recorded for a recipient in `domain`. */
  replyFor(domain: string): string {
    return `mail for ${domain} loops back to myself`;
  }
}

/** An open SMTP session with one server, reusable for several messages. */
export interface Connection {
  readonly mx: string;
  /** messages sent on this connection so far */
  readonly sent: number;
  /** false once the server closed it, a protocol error happened, or it was closed */
  readonly usable: boolean;
  /** One SMTP transaction: MAIL, RCPT each, DATA. Never throws: failures become per-recipient results. */
  send(msg: OutboundMessage): Promise<RecipientResult[]>;
  /** QUIT and close; never throws */
  close(): Promise<void>;
}

export interface Transport {
  /**
   * Connects to the first host of `dest.hosts` that answers (EHLO, STARTTLS per policy, AUTH for routes).
   * Throws ConnectFailure when none does.
   */
  connect(dest: Destination): Promise<Connection>;
}
