/**
 * @module bounce/ingest — mail that arrived at the bounce domain: consumed here, never queued for relay.
 *
 * - `b+{token}`: the report is parsed (bounce/parse.ts). The token names the recipient row (bounce/verp.ts); only
 *   when that row is gone does the Message-ID the report returns decide (its recipient the report names, or its
 *   only one). A failed recipient → `bounced` event and row status (queue/late.ts), and for a hard bounce the
 *   address goes on the suppression list of the message's owner; an ARF complaint → `complained` event and
 *   suppression. Delay warnings, success reports, auto-replies and ordinary mail are logged and dropped. A report
 *   that cannot be parsed, or names no recipient row we have, is kept (bounce/inbound.ts) for people to read.
 * - `postmaster`/`abuse`: kept and logged, and forwarded to `tracking.postmaster_forward` when one is set, as new
 *   mail from `<>` (so it can never cause a DSN), through intake (so the hop limit applies). A bounce or complaint
 *   there (a feedback loop registered to abuse@) is acted on when its returned Message-ID names our recipient.
 * Everything one SMTP transaction changes commits together, before the caller answers 250; reports arriving
 * together share a commit (bounce/group-commit.ts). Nothing that arrives here is ever answered with a DSN or a
 * reply. A failure while processing is logged and the mail kept as it came; only when even that cannot be stored
 * does receive() throw (451: the sender keeps it and tries again).
 */
import type { Database } from "bun:sqlite";
import type { TrackingConfig } from "../config/schema.ts";
import type { EventRecorder } from "../events/record.ts";
import { addressKey } from "../mail/address.ts";
import { SmtpError } from "../mail/errors.ts";
import { newInboundId, type InboundId, type RecipientId, type UserId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import { Metrics } from "../observe/metrics.ts";
import { LateReports, type ReportedRecipient } from "../queue/late.ts";
import { SuppressionWriter, type SuppressionReason } from "../suppression/list.ts";
import type { DsnIntake } from "./notify.ts";
import { GroupCommit } from "./group-commit.ts";
import { InboundStore, type InboundKind } from "./inbound.ts";
import { parseReport, type BouncedRecipient, type ParsedReport } from "./parse.ts";
import type { Verp } from "./verp.ts";

/** One SMTP transaction to the bounce domain, as received. */
export interface InboundMessage {
  /** the RCPT addresses, all at the bounce domain (`postmaster@…`, `abuse@…`, `b+…@…`) */
  recipients: string[];
  /** MAIL FROM; "" is the null sender */
  mailFrom: string;
  clientIp: string;
  raw: Buffer;
  /** our Received field, put on a forwarded copy */
  trace?: Buffer;
}

export interface IngestResult {
  id: InboundId;
  /** what became of it, for the transaction's log line */
  outcome: string;
}

export interface BounceIngestDeps {
  sqlite: Database;
  events: EventRecorder;
  /** where forwarded postmaster/abuse mail goes in (the runtime's Intake) */
  intake: DsnIntake;
  verp: Verp;
  tracking: TrackingConfig;
  log: Logger;
  /** a user's name for the log lines (auth/users.ts UserNames); default: none known */
  userName?: (id: UserId | null) => string | null;
  /** the runtime's registry (default: one of its own) */
  metrics?: Metrics;
  now?: () => number;
}

type ReportOutcome = Handled["outcome"];
const REPORT_OUTCOMES: readonly ReportOutcome[] = ["bounced", "complained", "duplicate", "dropped", "kept"];

/** Reports that came back to the bounce domain, by what became of them. */
function reportMetrics(metrics: Metrics) {
  return metrics.counter({
    name: "outpost_bounce_reports_total",
    help: "Reports received at the bounce domain, per recipient they name, by outcome: bounced, complained, duplicate (already bounced), dropped (delay warnings, auto-replies), kept (unreadable or unmatched).",
    labelNames: ["outcome"],
    initial: REPORT_OUTCOMES.map((outcome) => ({ outcome })),
  });
}

/** Why the mail is kept for people to read. */
interface Keep {
  kind: InboundKind;
  reason: string;
}

/** What one report did to its recipient row, for the log line after the commit. */
interface Handled {
  recipient: ReportedRecipient | null;
  outcome: "bounced" | "complained" | "duplicate" | "dropped" | "kept";
  detail?: Record<string, unknown>;
  suppressed?: SuppressionReason;
  /** with outcome "kept" */
  keep?: Keep;
}

/** How a report was tied to its recipient row (the `matched_by` of its event). */
type MatchedBy = "verp" | "recipient" | "message_id";

const MAILBOXES = new Set(["postmaster", "abuse"]);

export class BounceIngest {
  private inbound: InboundStore;
  private late: LateReports;
  private suppressions: SuppressionWriter;
  private group: GroupCommit;
  private now: () => number;
  private reports: ReturnType<typeof reportMetrics>;

  constructor(private deps: BounceIngestDeps) {
    this.reports = reportMetrics(deps.metrics ?? new Metrics());
    this.inbound = new InboundStore(deps.sqlite);
    this.late = new LateReports(deps.sqlite, deps.events);
    this.suppressions = new SuppressionWriter(deps.sqlite);
    this.group = new GroupCommit(deps.sqlite);
    this.now = deps.now ?? Date.now;
  }

  /** The largest message taken for the bounce domain (anyone may send there, so it is small). */
  get maxSize(): number {
    return this.deps.tracking.bounce_max_size;
  }

  /** Is this `b+…` local part a token we signed? (smtp/relay.ts: anything else there is 550 5.1.1) */
  isValidToken(localPart: string): boolean {
    return this.deps.verp.recipientFromVerp(localPart) !== null;
  }

  /** Processes and commits; resolves once durable. Throws SmtpError 451 only when nothing could be stored. */
  async receive(m: InboundMessage): Promise<IngestResult> {
    const now = this.now();
    const id = newInboundId(now);
    try {
      const report = await parseReport(m.raw);
      return await this.commit(id, m, report, now);
    } catch (e) {
      this.deps.log.error("bounce_ingest_failed", { inbound_id: id, client_ip: m.clientIp, error: e });
      try {
        this.inbound.keep({ ...this.row(id, m, now), kind: "failed", reason: `processing failed: ${e instanceof Error ? e.message : String(e)}` });
        return { id, outcome: "kept (processing failed)" };
      } catch (e2) {
        throw new SmtpError(451, "4.3.0", "temporary failure storing the message, try again", e2);
      }
    }
  }

  private async commit(id: InboundId, m: InboundMessage, report: ParsedReport, now: number): Promise<IngestResult> {
    const tokens = m.recipients.flatMap((a) => this.deps.verp.recipientFromVerp(localOf(a)) ?? []);
    const mailbox = m.recipients.map((a) => localOf(a).toLowerCase()).find((l) => MAILBOXES.has(l));
    // a feedback loop is often registered to abuse@, and a receiver may send a DSN to postmaster@: such a report is
    // acted on when the Message-ID it returns names one of our recipients (the mail is kept for people either way)
    const readMailbox = mailbox !== undefined && (report.kind === "bounce" || report.kind === "complaint");
    const { handled, forwarded, keeps } = await this.group.run(() => {
      const keeps: Keep[] = mailbox ? [{ kind: mailbox as InboundKind, reason: `mail to ${mailbox}@` }] : [];
      const handled = [...tokens, ...(readMailbox ? [null] : [])].map((t) => this.handle(t, report, now));
      for (const h of handled) if (h.keep) keeps.push(h.keep);
      if (keeps.length > 0) {
        this.inbound.keep({ ...this.row(id, m, now), kind: keeps[0]!.kind, reason: [...new Set(keeps.map((k) => k.reason))].join("; ") });
      }
      return { handled, forwarded: mailbox ? this.forward(m) : null, keeps };
    });
    this.logAfterCommit(id, m, report, handled, forwarded, keeps);
    const outcome = keeps.length > 0 ? "kept" : handled.map((h) => h.outcome).join(",") || "dropped";
    return { id, outcome };
  }

  /** What the report says of the row a token (or, without one, the report) names. Runs inside the transaction. */
  private handle(token: RecipientId | null, report: ParsedReport, now: number): Handled {
    if (report.kind === "unparsed") return kept(null, "unparsed", "no delivery report found in the message");
    if (report.kind !== "bounce" && report.kind !== "complaint") {
      // delay warnings, success reports, auto-replies, ordinary mail: nothing to record
      return { recipient: token ? this.late.recipient(token) : null, outcome: "dropped", detail: { report: report.kind } };
    }
    const match = this.match(token, report);
    if (!match) {
      const why = token ? `recipient ${token} is no longer in the queue` : "the report names no recipient of ours";
      return kept(null, "unmatched", report.originalMessageId ? `${why} (nor does its Message-ID ${report.originalMessageId})` : why);
    }
    const { rec, by } = match;
    if (report.kind === "complaint") {
      const detail = { feedback_type: report.complaint?.feedbackType ?? "abuse", matched_by: by };
      this.late.recordComplaint(rec, detail, now);
      const added = this.suppress(rec, "complaint", now);
      return { recipient: rec, outcome: "complained", detail, suppressed: added ? "complaint" : undefined };
    }
    // the token is the proof: we sent this return path to one recipient only, so when the report names another
    // address (an alias the receiver expanded, a forward) the failure is still that recipient's
    const r = report.recipients.find((f) => f.action === "failed" && sameAddress(f, rec.address)) ?? report.recipients.find((f) => f.action === "failed");
    if (!r) return kept(rec, "unmatched", "a bounce report without a failed recipient");
    return this.bounce(rec, by, r, report, now);
  }

  /**
   * The row a report is about: the token's (`verp`); else, when the returned message's Message-ID names one of
   * ours, its recipient the report names (`recipient`), or its only recipient (`message_id`).
   */
  private match(token: RecipientId | null, report: ParsedReport): { rec: ReportedRecipient; by: MatchedBy } | null {
    const byToken = token ? this.late.recipient(token) : null;
    if (byToken) return { rec: byToken, by: "verp" };
    if (!report.originalMessageId) return null;
    const rows = this.late.recipientsOfMessageId(report.originalMessageId);
    const named = reportedAddresses(report);
    const rec = rows.find((r) => named.has(addressKey(r.address)));
    if (rec) return { rec, by: "recipient" };
    return rows.length === 1 ? { rec: rows[0]!, by: "message_id" } : null;
  }

  private bounce(rec: ReportedRecipient, by: MatchedBy, r: BouncedRecipient, report: ParsedReport, now: number): Handled {
    const status = r.status || (r.code && r.code >= 400 && r.code < 500 ? "4.0.0" : "5.0.0");
    const bounceClass = r.class === "hard" ? "hard" : "soft";
    const detail = { bounce_class: bounceClass, matched_by: by, async: true };
    const mx = r.remoteMta ?? report.reportingMta;
    const changed = this.late.recordLateBounce(rec, { reply: r.diagnostic || status, status, mx }, detail, now);
    // a repeated report still suppresses: the first one may have come before the address was known to be bad
    const added = bounceClass === "hard" && this.suppress(rec, "hard_bounce", now);
    return {
      recipient: rec,
      outcome: changed ? "bounced" : "duplicate",
      detail: { ...detail, status, mx },
      suppressed: added ? "hard_bounce" : undefined,
    };
  }

  /** On the owner's list; true when it was not there yet (for the log line). */
  private suppress(rec: ReportedRecipient, reason: SuppressionReason, now: number): boolean {
    return this.suppressions.add(rec.userId, rec.address, reason, now);
  }

  /**
   * A copy to the operator, in a savepoint: a refusal (a loop over the hop limit, a suppressed address) is
   * logged and leaves the kept copy standing.
   */
  private forward(m: InboundMessage): { id: string } | { error: unknown } | null {
    const to = this.deps.tracking.postmaster_forward;
    if (to === "") return null;
    try {
      return this.deps.sqlite.transaction(() =>
        this.deps.intake.acceptNow({
          userId: null,
          allowedDomains: null,
          envelopeFrom: "",
          recipients: [to],
          raw: m.raw,
          trace: m.trace,
          source: "smtp",
          options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
        }),
      )();
    } catch (error) {
      return { error };
    }
  }

  private row(id: InboundId, m: InboundMessage, now: number) {
    return { id, receivedAt: now, rcpt: m.recipients.join(", "), mailFrom: m.mailFrom, clientIp: m.clientIp, size: m.raw.length, raw: m.raw };
  }

  private logAfterCommit(
    id: InboundId,
    m: InboundMessage,
    report: ParsedReport,
    handled: Handled[],
    forwarded: { id: string } | { error: unknown } | null,
    keeps: Keep[],
  ): void {
    const log = this.deps.log;
    const base = { inbound_id: id, client_ip: m.clientIp, mail_from: m.mailFrom };
    for (const h of handled) {
      this.reports.inc({ outcome: h.outcome });
      const rec = h.recipient;
      const story = {
        queue_id: rec?.messageId ?? null, message_id: rec?.messageIdHeader ?? null, user: rec ? (this.deps.userName?.(rec.userId) ?? null) : null,
      };
      log.info("bounce_report", {
        ...story, ...base, report: report.kind, outcome: h.outcome, recipient_id: rec?.id ?? null,
        recipient: rec?.address ?? null, ...h.detail, ...h.keep,
      });
      if (h.suppressed) log.info("suppression_added", { ...story, address: addressKey(rec!.address), reason: h.suppressed, inbound_id: id });
    }
    if (keeps.length > 0) log.info("inbound_kept", { ...base, kind: keeps[0]!.kind, rcpt: m.recipients, size: m.raw.length });
    if (forwarded && "id" in forwarded) log.info("inbound_forwarded", { ...base, queue_id: forwarded.id, to: this.deps.tracking.postmaster_forward });
    else if (forwarded) log.warn("inbound_forward_failed", { ...base, to: this.deps.tracking.postmaster_forward, error: forwarded.error });
  }
}

function kept(recipient: ReportedRecipient | null, kind: InboundKind, reason: string): Handled {
  return { recipient, outcome: "kept", keep: { kind, reason } };
}

function localOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? address : address.slice(0, at);
}

/** One mailbox, however the report spells it (case, U-label or A-label domain, quotes): mail/address.ts keys. */
/** The addresses a report says it is about: failed recipients (as sent and as delivered), a complaint's recipient. */
function reportedAddresses(report: ParsedReport): Set<string> {
  const out = new Set<string>();
  for (const r of report.recipients) {
    out.add(addressKey(r.address));
    if (r.finalRecipient) out.add(addressKey(r.finalRecipient));
  }
  if (report.complaint?.originalRecipient) out.add(addressKey(report.complaint.originalRecipient));
  return out;
}

function sameAddress(r: BouncedRecipient, address: string): boolean {
  const a = addressKey(address);
  return addressKey(r.address) === a || (r.finalRecipient !== undefined && addressKey(r.finalRecipient) === a);
}
