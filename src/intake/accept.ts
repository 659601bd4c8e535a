/**
 * @module intake/accept — the one door into the queue (SMTP, REST API, and DSNs we generate):
 * policy → prepare → hop limit → CSS inlining → durable enqueue, which reads the suppression list inside its
 * transaction. Resolves only after the commit.
 */
import type { Store } from "../db/client.ts";
import type { TrackingConfig } from "../config/schema.ts";
import { addressKey, canonicalAddress, parseAddress } from "../mail/address.ts";
import type { UserId } from "../mail/ids.ts";
import { suppressedWhenAsked } from "../suppression/list.ts";
import { inlineCssInMessage } from "../message/inline-css.ts";
import { Metrics } from "../observe/metrics.ts";
import type { Logger } from "../observe/log.ts";
import { recipientsFinal } from "../queue/metrics.ts";
import type { Enqueuer, EnqueuedMessage, MessageOptions, MessageSource, NewMessage } from "../queue/enqueue.ts";
import {
  checkAuthors, checkHops, checkOptions, checkRecipientCount, checkRecipientDomain, checkSender, checkSize, IntakeError, sendingDomains,
  type PolicyLimits,
} from "./policy.ts";
import { labelsOfFields, mergeLabels } from "./labels.ts";
import { prepareMessage, type ReadMessage } from "./prepare.ts";
import type { VerifiedDomains } from "./verified-domains.ts";

export interface Submission {
  /** null for trusted-network clients and system mail */
  userId: UserId | null;
  /** the user's allowed sender domains (empty = any); null when no user restriction applies */
  allowedDomains: readonly string[] | null;
  envelopeFrom: string;
  recipients: string[];
  /** the message as the client sent it (SMTP: with its line ends already made CRLF, see `sentSize`) */
  raw: Buffer;
  /** `raw` as intake/prepare's readMessage read it, when the caller already had to (the API): not read twice */
  read?: ReadMessage;
  /** what the size limit counts: the bytes the client sent; default raw.length */
  sentSize?: number;
  /** `raw` is intake's to rewrite in place, with this many free bytes before it (intake/prepare's `room`) */
  room?: number;
  /** our Received field, put on top after the size check (a message at the limit must not fail on our own line) */
  trace?: Buffer;
  source: MessageSource;
  /** options given explicitly (API fields); they win over X-Outpost-* headers and the defaults */
  options?: Partial<MessageOptions>;
  /** `tag` and `metadata` given with the request (API fields); they win over X-Outpost-Tag/-Metadata-* headers */
  tag?: string;
  metadata?: Record<string, string>;
  idempotencyKey?: string;
  /** with `idempotencyKey`: the submission's fingerprint, stored with the key (a repeat must match it) */
  idempotencyHash?: string;
  /** a key still held by this user's message created before this moment (ms) passes to the new one */
  idempotencyExpiredBefore?: number;
}

export interface IntakeDeps {
  store: Store;
  enqueuer: Enqueuer;
  hostname: string;
  limits: PolicyLimits;
  tracking: TrackingConfig;
  /** http.public_url: the base of tracking and unsubscribe links; "" when there is none */
  publicUrl: string;
  /** where a message whose CSS could not be inlined is reported */
  log?: Logger;
  /** set when `spf.require_verified_domains` is on: a user's sending domains must have passed their check */
  verifiedDomains?: VerifiedDomains;
  /** the runtime's registry (default: one of its own) */
  metrics?: Metrics;
}

/** What the door counts: every message stored, whichever way it came in. */
function intakeMetrics(metrics: Metrics) {
  const sources = [{ source: "smtp" }, { source: "api" }, { source: "dsn" }];
  return {
    messages: metrics.counter({
      name: "outpost_messages_accepted_total",
      help: "Messages stored in the queue, by source (smtp, api, dsn: a delivery status notification outpost wrote).",
      labelNames: ["source"],
      initial: sources,
    }),
    recipients: metrics.counter({
      name: "outpost_recipients_accepted_total",
      help: "Recipients of the messages stored, by source (suppressed ones included).",
      labelNames: ["source"],
      initial: sources,
    }),
    final: recipientsFinal(metrics),
    inlineCssFailures: metrics.counter({
      name: "outpost_inline_css_failures_total",
      help: "Messages stored without their CSS inlined because their MIME could not be rewritten.",
    }),
  };
}

export class Intake {
  private counters: ReturnType<typeof intakeMetrics>;

  constructor(private deps: IntakeDeps) {
    this.counters = intakeMetrics(deps.metrics ?? new Metrics());
  }

  /** A reload (SIGHUP): the `[tracking]` defaults for messages submitted from now on. */
  reconfigure(tracking: TrackingConfig): void {
    this.deps = { ...this.deps, tracking };
  }

  get limits(): PolicyLimits {
    return this.deps.limits;
  }

  /** Stores the submission through the group commit; resolves after the commit. */
  async accept(sub: Submission): Promise<EnqueuedMessage> {
    const { msg: checked, domains } = this.toNewMessage(sub);
    const verified = this.deps.verifiedDomains;
    // users only: trusted-network clients and our own DSNs send as whatever domain they already do
    if (verified && sub.allowedDomains !== null) for (const d of domains) await verified.require(d);
    const { msg, inlineCssFailure } = await this.inlineCss(checked);
    let queued: EnqueuedMessage;
    try {
      queued = await this.deps.enqueuer.enqueue(msg);
    } catch (e) {
      throw storeFailure(e);
    }
    this.count(sub.source, queued);
    if (inlineCssFailure !== undefined) {
      this.counters.inlineCssFailures.inc();
      this.deps.log?.warn("inline_css_failed", { queue_id: queued.id, reason: inlineCssFailure });
    }
    return queued;
  }

  /**
   * inlinizecss, applied to the stored copy once, so every recipient and `GET /v1/messages/{id}` see it. A
   * message whose MIME cannot be rewritten is stored as it came (reported after the commit, with its id).
   */
  private async inlineCss(msg: NewMessage): Promise<{ msg: NewMessage; inlineCssFailure?: string }> {
    if (!msg.options.inlineCss) return { msg };
    const r = await inlineCssInMessage(msg.body);
    return r.ok ? { msg: { ...msg, body: r.body } } : { msg, inlineCssFailure: r.reason };
  }

  private count(source: MessageSource, queued: EnqueuedMessage): void {
    this.counters.messages.inc({ source });
    this.counters.recipients.inc({ source }, queued.recipients.length);
    const suppressed = queued.recipients.filter((r) => r.status === "suppressed").length;
    if (suppressed > 0) this.counters.final.inc({ status: "suppressed" }, suppressed);
  }

  /**
   * Stores the submission inside the caller's open transaction (mail we generate while settling: DSNs), so
   * it commits, or rolls back, with what caused it. Same rules as accept(), except CSS inlining, which needs
   * the event loop: the mail made here (DSNs, kept inbound mail) is sent with inlineCss off.
   */
  acceptNow(sub: Submission): EnqueuedMessage {
    const { msg } = this.toNewMessage(sub);
    let queued: EnqueuedMessage;
    try {
      queued = this.deps.enqueuer.enqueueNow(msg);
    } catch (e) {
      throw storeFailure(e);
    }
    // counted when written: the caller's transaction commits it, or (a failing store) retries what caused it
    this.count(sub.source, queued);
    return queued;
  }

  /**
   * Policy, suppression and preparation: everything before the write, and the domains the message is sent as.
   * Throws IntakeError.
   */
  private toNewMessage(sub: Submission): { msg: NewMessage; domains: string[] } {
    const { limits, tracking, store, hostname } = this.deps;
    const envelopeFrom = canonical(sub.envelopeFrom);
    checkSender(sub.allowedDomains, envelopeFrom);
    const recipients = dedupe(sub.recipients);
    checkRecipientCount(recipients.length, limits);
    for (const r of recipients) checkRecipientDomain(r, limits);
    checkSize(sub.sentSize ?? sub.raw.length, limits);
    const prepared = prepareMessage(sub.raw, hostname, { read: sub.read, trace: sub.trace, room: sub.room });
    checkAuthors(sub.allowedDomains, prepared.authors);
    checkHops(prepared.received, limits);
    const defaults: MessageOptions = {
      inlineCss: tracking.inline_css,
      trackClicks: tracking.clicks,
      trackOpens: tracking.opens,
      trackBounces: tracking.bounces,
      unsubscribe: tracking.unsubscribe,
    };
    const options: MessageOptions = { ...defaults, ...prepared.headerOptions, ...sub.options };
    checkOptions(options, { bounceDomain: tracking.bounce_domain, publicUrl: this.deps.publicUrl });
    const labels = mergeLabels(prepared.headerLabels, labelsOfFields(sub.tag, sub.metadata));
    const msg: NewMessage = {
      userId: sub.userId,
      envelopeFrom,
      recipients,
      // read by the enqueuer inside the transaction that stores the message
      suppressed: suppressedWhenAsked(store.db, sub.userId, recipients),
      body: prepared.body,
      subject: prepared.subject,
      messageIdHeader: prepared.messageIdHeader,
      source: sub.source,
      options,
      tag: labels.tag,
      metadata: labels.metadata,
      idempotencyKey: sub.idempotencyKey,
      idempotencyHash: sub.idempotencyHash,
      idempotencyExpiredBefore: sub.idempotencyExpiredBefore,
    };
    return { msg, domains: sendingDomains(envelopeFrom, prepared.authors) };
  }
}

/** Nothing was stored: the client must try again later, never believe it was accepted. */
function storeFailure(e: unknown): IntakeError {
  return new IntakeError(451, "4.3.0", "temporary failure storing the message, try again", 503, undefined, e);
}

/**
 * The addresses in canonical form (mail/address.ts), one per mailbox: two spellings of one address (`Foo@X`,
 * `"foo"@x`, a U-label and an A-label domain) are delivered once, to the first spelling's canonical form.
 * SMTP's transaction log lists them the same way.
 */
export function dedupe(addresses: string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const a of addresses) {
    const p = parseAddress(a);
    const k = p.ok ? p.key : addressKey(a);
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(p.ok ? p.canonical : a);
  }
  return out;
}

/**
 * The canonical form of an address the adapters have checked. One that does not parse is kept as given: the null
 * sender "", and mail we make ourselves (a DSN to an envelope sender stored by an older version).
 */
function canonical(address: string): string {
  return canonicalAddress(address) ?? address;
}
