/**
 * @module delivery/outcome — turns one attempt's results into queue state, events, log lines and DSNs (and a
 * hard bounce into a suppression).
 *
 * All state changes of one settle() call, the DSN for its final bounces and the suppression of hard-bounced
 * addresses commit in ONE transaction (queue/settle.ts does the SQL, intake queues the DSN in a savepoint,
 * suppression/list.ts lists the address on the message's owner's list), so a crash loses none of them: the bounce and
 * its notice are stored together or the attempt is made again. A DSN that intake refuses is logged, never
 * thrown: the bounce still commits. One settle() call is one message at one destination, so a message whose
 * recipients bounce at two destinations gets two DSNs (as with Postfix, one notice per delivery pass).
 * settle() returns the log lines as an AfterCommit: nothing is said of a change before it is durable.
 */
import type { DeliveryConfig } from "../config/schema.ts";
import type { EventRecorder } from "../events/record.ts";
import type { Logger } from "../observe/log.ts";
import type { ClaimedRecipient, StoredMessage } from "../queue/claim.ts";
import { isExpired, nextAttemptAt } from "../queue/retry.ts";
import { QueueSettler, type AttemptInfo, type PendingRecipient } from "../queue/settle.ts";
import { queueDsn, type DsnIntake, type FailedRecipient } from "../bounce/notify.ts";
import { classifyFailure } from "../bounce/rules.ts";
import { addressKey } from "../mail/address.ts";
import { SuppressionWriter } from "../suppression/list.ts";
import type { Database } from "bun:sqlite";
import type { AfterCommit, RecipientResult, RouteResult } from "./types.ts";
import { classifyReply, enhancedFor } from "./classify.ts";
import { Metrics } from "../observe/metrics.ts";
import { recipientsFinal } from "../queue/metrics.ts";
import type { UserId } from "../mail/ids.ts";
import { usesVerp } from "./personalize.ts";

export interface OutcomeDeps {
  sqlite: Database;
  events: EventRecorder;
  /** where DSNs go in; the runtime's Intake */
  intake: DsnIntake;
  delivery: DeliveryConfig;
  /** tracking.bounce_domain: messages sent with VERP return paths there get no DSN (their bounces come to us) */
  bounceDomain: string;
  hostname: string;
  log: Logger;
  /** a user's name for the log lines (auth/users.ts UserNames); default: none known */
  userName?: (id: UserId | null) => string | null;
  /** the runtime's registry (default: one of its own) */
  metrics?: Metrics;
  now?: () => number;
  random?: () => number;
}

/** One recipient's attempt as /metrics counts it: its settled status, with a throttle reply and an expiry told apart. */
type AttemptResult = "delivered" | "deferred" | "throttled" | "bounced" | "expired";
const ATTEMPT_RESULTS: readonly AttemptResult[] = ["delivered", "deferred", "throttled", "bounced", "expired"];

/** Seconds from acceptance to delivery: a minute-ish first attempt up to the retry schedule's days. */
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600];

function outcomeMetrics(metrics: Metrics) {
  return {
    attempts: metrics.counter({
      name: "outpost_delivery_attempts_total",
      help: "Delivery attempts per recipient, by result: delivered, deferred, throttled (deferred on a 421 or a rate/too-many reply), bounced, expired (bounced after max_queue_time).",
      labelNames: ["result"],
      initial: ATTEMPT_RESULTS.map((result) => ({ result })),
    }),
    final: recipientsFinal(metrics),
    latency: metrics.histogram({
      name: "outpost_delivery_latency_seconds",
      help: "Seconds from acceptance (250/202) to delivery, per delivered recipient.",
      buckets: LATENCY_BUCKETS,
    }),
    dsns: metrics.counter({
      name: "outpost_dsn_queued_total",
      help: "Delivery status notifications queued to the envelope sender, by action (failed, delayed).",
      labelNames: ["action"],
      initial: [{ action: "failed" }, { action: "delayed" }],
    }),
  };
}

/** What settle decided for one recipient, for the log line and the DSN. */
interface Settled {
  rec: PendingRecipient;
  result: RecipientResult;
  info: AttemptInfo;
  status: "delivered" | "deferred" | "bounced";
  nextAttemptAt?: number;
  /** a hard bounce put the address on the message owner's suppression list (it was not there yet) */
  suppressed?: boolean;
  /** bounced because the message waited max_queue_time */
  expired?: boolean;
}

/**
 * The recipient's address itself is bad (bounce/rules.ts says "hard": 5.1.1 no such mailbox, 5.1.2 no such
 * domain, 5.1.3 bad syntax, 5.1.6 moved, 5.1.10 null MX, 5.4.4 no mail server, or a permanent reply whose text
 * says the user does not exist), said of that recipient alone (its RCPT reply or its domain's routing): sending
 * to it again can only bounce again and hurt the sender's reputation, so it goes on the suppression list
 * (Postmark's "hard bounce"). Never a MAIL FROM or DATA reply shared by all recipients (a 5.1.8 "bad sender"
 * is about us), nor a reply about the sender, a full mailbox, a policy refusal or an expiry (4.4.7).
 */
export function isHardBounce(result: RecipientResult, status: string): boolean {
  return result.aboutRecipient === true && classifyFailure({ code: result.code, status, text: result.reply }) === "hard";
}

export class OutcomeRecorder {
  private counters: ReturnType<typeof outcomeMetrics>;
  private settler: QueueSettler;
  private suppressions: SuppressionWriter;
  private now: () => number;
  private random: () => number;

  constructor(private deps: OutcomeDeps) {
    this.counters = outcomeMetrics(deps.metrics ?? new Metrics());
    this.settler = new QueueSettler(deps.sqlite, deps.events);
    this.suppressions = new SuppressionWriter(deps.sqlite);
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
  }

  /** A reload (SIGHUP): retries, queue lifetime and delay warnings for outcomes settled from now on. */
  reconfigure(delivery: DeliveryConfig): void {
    this.deps = { ...this.deps, delivery };
  }

  /**
   * Records the results (and the DSN they call for) in one transaction, a savepoint when the caller has one
   * open (the settle batch). Returns the log lines to write once that outer transaction has committed.
   */
  settle(message: StoredMessage, results: RecipientResult[]): AfterCommit {
    if (results.length === 0) return () => {};
    const now = this.now();
    const { settled, dsn } = this.settler.transaction(() => {
      const done: Settled[] = [];
      for (const result of results) {
        const s = this.settleOne(message, result, now);
        if (s) done.push(s);
      }
      return { settled: done, dsn: this.notices(message, done, now) };
    });
    return () => {
      const user = this.deps.userName?.(message.userId) ?? null;
      for (const s of settled) this.count(message, s, now);
      for (const d of dsn) if ("queued" in d) this.counters.dsns.inc({ action: d.action });
      for (const s of settled) this.logAttempt(message, user, s, now);
      for (const s of settled) if (s.suppressed) this.logSuppression(message, user, s);
      for (const notice of dsn) this.logDsn(message, user, notice);
    };
  }

  /**
   * The DSNs this settle calls for, queued in its transaction: one for the final bounces, and one warning when
   * the message has now waited `delay_warning` (once per message). A message sent with VERP return paths
   * (bounce tracking) has its bounces come back to us and its sender hear of them through events, so no DSN of
   * either kind is sent; without VERP (no bounce domain) the sender gets its DSNs as usual.
   */
  private notices(message: StoredMessage, done: Settled[], now: number): DsnOutcome[] {
    if (usesVerp(message, this.deps.bounceDomain)) return [];
    const out: DsnOutcome[] = [];
    const bounced = done.filter((s) => s.status === "bounced");
    if (bounced.length > 0) out.push(this.notify(message, bounced, now, "failed"));
    const deferred = done.filter((s) => s.status === "deferred");
    const warnAfter = this.deps.delivery.delay_warning;
    if (deferred.length > 0 && warnAfter > 0 && now - message.createdAt >= warnAfter) {
      const warning = this.warnDelay(message, deferred, now);
      if (warning) out.push(warning);
    }
    return out;
  }

  /** The delay warning, once per message: the flag and the DSN share a savepoint, so a DSN that cannot be
   *  queued leaves the message unwarned, and a later deferral tries again. */
  private warnDelay(message: StoredMessage, deferred: Settled[], now: number): DsnOutcome | null {
    try {
      return this.deps.sqlite.transaction(() =>
        this.settler.claimDelayWarning(message.id) ? this.queueNotice(message, deferred, now, "delayed") : null,
      )();
    } catch (error) {
      return { error, action: "delayed" };
    }
  }

  settleRouteFailure(
    message: StoredMessage,
    recipients: ClaimedRecipient[],
    result: Exclude<RouteResult, { kind: "ok" }>,
  ): AfterCommit {
    const results: RecipientResult[] = recipients.map((r) =>
      result.kind === "permanent"
        ? { recipientId: r.id, outcome: "bounced", code: 0, enhanced: enhancedFor(550, result.enhanced), reply: result.reason, aboutRecipient: true }
        : // 4.4.3: directory server (DNS) failure, RFC 3463
          { recipientId: r.id, outcome: "deferred", code: 0, enhanced: "4.4.3", reply: result.reason },
    );
    return this.settle(message, results);
  }

  /** One recipient's transition; null when it is no longer pending (settled by a duplicate, or deleted). */
  private settleOne(message: StoredMessage, result: RecipientResult, now: number): Settled | null {
    const rec = this.settler.pendingRecipient(result.recipientId);
    if (!rec) return null;
    const info: AttemptInfo = { reply: fullReply(result), status: statusOf(result), mx: result.mx };
    const { delivery } = this.deps;
    switch (result.outcome) {
      case "delivered":
        return this.settler.markDelivered(rec, info, now) ? { rec, result, info, status: "delivered" } : null;
      case "bounced": {
        if (!this.settler.markBounced(rec, info, now)) return null;
        const suppressed = isHardBounce(result, info.status) && this.suppressions.add(message.userId, rec.address, "hard_bounce", now);
        return { rec, result, info, status: "bounced", suppressed };
      }
      case "deferred": {
        if (isExpired(message.createdAt, now, delivery.max_queue_time)) {
          const expired: AttemptInfo = {
            reply: `message expired after ${formatAge(now - message.createdAt)} in the queue; last reply: ${info.reply}`,
            status: "4.4.7",
            mx: info.mx,
          };
          return this.settler.markBounced(rec, expired, now) ? { rec, result, info: expired, status: "bounced", expired: true } : null;
        }
        const at = nextAttemptAt(rec.attempts + 1, now, message.createdAt, delivery.retry, delivery.max_queue_time, this.random);
        return this.settler.markDeferred(rec, info, at, now)
          ? { rec, result, info, status: "deferred", nextAttemptAt: at }
          : null;
      }
    }
  }

  private count(message: StoredMessage, s: Settled, now: number): void {
    const { attempts, final, latency } = this.counters;
    if (s.status === "deferred") {
      const throttled = s.result.code > 0 && classifyReply(s.result.code, s.result.enhanced, s.result.reply) === "throttle";
      attempts.inc({ result: throttled ? "throttled" : "deferred" });
      return;
    }
    attempts.inc({ result: s.expired ? "expired" : s.status });
    final.inc({ status: s.status });
    if (s.status === "delivered") latency.observe(Math.max(0, now - message.createdAt) / 1000);
  }

  private logSuppression(message: StoredMessage, user: string | null, s: Settled): void {
    const fields = {
      queue_id: message.id, message_id: message.messageIdHeader ?? null, user, address: addressKey(s.rec.address), reason: "hard_bounce", dsn: s.info.status,
    };
    this.deps.log.info("suppression_added", fields);
  }

  /** One JSON line per recipient per attempt (Postfix's `status=` line). */
  private logAttempt(message: StoredMessage, user: string | null, s: Settled, now: number): void {
    this.deps.log.info("delivery", {
      queue_id: message.id,
      message_id: message.messageIdHeader ?? null,
      user,
      sender: message.envelopeFrom,
      recipient_id: s.rec.id,
      recipient: s.rec.address,
      mx: s.info.mx ?? null,
      reply: s.info.reply,
      dsn: s.info.status,
      delay_ms: now - message.createdAt,
      attempts: s.rec.attempts + 1,
      status: s.status,
      ...(s.nextAttemptAt !== undefined ? { next_attempt_at: new Date(s.nextAttemptAt).toISOString() } : {}),
    });
  }

  /** Queues the DSN in this transaction; what happened, for the log line after the commit. Never throws. */
  private notify(message: StoredMessage, reported: Settled[], now: number, action: "failed" | "delayed"): DsnOutcome {
    try {
      return this.queueNotice(message, reported, now, action);
    } catch (error) {
      return { error, action };
    }
  }

  /** Throws what intake throws. */
  private queueNotice(message: StoredMessage, reported: Settled[], now: number, action: "failed" | "delayed"): DsnOutcome {
    const recipients: FailedRecipient[] = reported.map((s) => ({
      address: s.rec.address,
      status: s.info.status,
      code: s.result.code,
      diagnostic: s.info.reply,
      mx: s.info.mx,
      lastAttemptAt: now,
    }));
    const queued = queueDsn(this.deps.intake, {
      hostname: this.deps.hostname,
      queueId: message.id,
      envelopeFrom: message.envelopeFrom,
      arrivalDate: message.createdAt,
      original: message.body,
      recipients,
      now,
      action,
      willRetryUntil: message.createdAt + this.deps.delivery.max_queue_time,
    });
    return { ...queued, action };
  }

  private logDsn(message: StoredMessage, user: string | null, dsn: DsnOutcome): void {
    const log = this.deps.log;
    const base = { queue_id: message.id, message_id: message.messageIdHeader ?? null, user, action: dsn.action };
    if ("queued" in dsn) log.info("dsn_queued", { ...base, dsn_id: dsn.queued.id, to: message.envelopeFrom });
    else if ("skipped" in dsn) log.info("dsn_skipped", { ...base, reason: dsn.skipped });
    else log.warn("dsn_failed", { ...base, to: message.envelopeFrom, error: dsn.error });
  }
}

type DsnOutcome = (ReturnType<typeof queueDsn> | { error: unknown }) & { action: "failed" | "delayed" };

/** The reply as recorded: "550 5.1.1 text", keeping a reply that already starts with its code as it is. */
export function fullReply(r: RecipientResult): string {
  const text = r.reply.replace(/\r?\n/g, " ").trim();
  if (r.code === 0 || /^\d{3}[ -]/.test(text)) return text;
  const enhanced = statusOf(r);
  return text.startsWith(enhanced) ? `${r.code} ${text}` : `${r.code} ${enhanced} ${text}`;
}

function statusOf(r: RecipientResult): string {
  return r.code === 0 && r.enhanced ? r.enhanced : enhancedFor(r.code, r.enhanced);
}

function formatAge(ms: number): string {
  const h = ms / 3_600_000;
  return h >= 48 ? `${Math.round(h / 24)}d` : h >= 1 ? `${Math.round(h)}h` : `${Math.round(ms / 60_000)}m`;
}
