/**
 * @module delivery/personalize — the one per-recipient stage: a stored message and its recipients at one
 * destination → the SMTP transactions (envelope + the bytes actually sent) that carry it. The scheduler calls it
 * without knowing what it changes.
 *
 * Each recipient's copy is made in this order (RFC 6376 §5: the signature covers the final bytes):
 *   1. click links and the open pixel (tracking/html.ts), with that recipient's tokens;
 *   2. List-Unsubscribe and List-Unsubscribe-Post for that recipient (tracking/unsubscribe.ts);
 *   3. the VERP return path `b+{token}@{bounce_domain}` (bounce/verp.ts), in the envelope only;
 *   4. DKIM signatures (dkim/sign.ts), last.
 * Recipients whose copies are the same bytes with the same return path share one transaction (and one
 * signature); any per-recipient change gives a recipient a transaction of its own. A message whose HTML cannot be
 * rewritten goes out with its HTML as stored (still signed, its List-Unsubscribe still added): one
 * `personalize_skipped` line per job and a count per copy, never a bounce. Anything else that fails rejects, and
 * the scheduler defers the recipients (unknown errors are temporary). A DSN (null sender) keeps `<>`.
 */
import type { Verp } from "../bounce/verp.ts";
import type { DkimSigner, SignResult } from "../dkim/sign.ts";
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { Logger } from "../observe/log.ts";
import { Metrics, type Counter } from "../observe/metrics.ts";
import type { StoredMessage } from "../queue/claim.ts";
import { personalizeHtml } from "../tracking/html.ts";
import { trackingUrls, type TrackingTokens } from "../tracking/token.ts";
import { withListUnsubscribe } from "../tracking/unsubscribe.ts";
import type { OutboundMessage } from "./types.ts";

export interface PersonalizeKeys {
  verp: Verp;
  /** tracking.bounce_domain; "" turns VERP off */
  bounceDomain: string;
  tokens: TrackingTokens;
  /** http.public_url; "" leaves tracking links and List-Unsubscribe out (intake refuses such messages now) */
  publicUrl: string;
  signer: DkimSigner;
}

type Recipient = { id: RecipientId; address: string };

/** Does this message go out with VERP return paths? (Then bounces come back to us, not to its sender.) */
export function usesVerp(message: Pick<StoredMessage, "options" | "envelopeFrom">, bounceDomain: string): boolean {
  return message.options.trackBounces && bounceDomain !== "" && message.envelopeFrom !== "";
}

/** Bodies kept so that a message's HTML is compiled (and its shared copy signed) once, not once per job. */
const REMEMBER_BYTES = 32 * 1024 * 1024;

/** What this stage counts on /metrics. */
function personalizeMetrics(metrics: Metrics): { signatures: Counter<"algorithm">; skipped: Counter<"reason"> } {
  return {
    signatures: metrics.counter({
      name: "outpost_dkim_signatures_total",
      help: "DKIM signatures added to outgoing copies, by algorithm (rsa-sha256, ed25519-sha256).",
      labelNames: ["algorithm"],
    }),
    skipped: metrics.counter({
      name: "outpost_personalize_skipped_total",
      help: "Recipient copies sent with their HTML as stored (untracked) because it could not be rewritten, by reason.",
      labelNames: ["reason"],
    }),
  };
}

export class Personalizer {
  private readonly counters: ReturnType<typeof personalizeMetrics>;
  /** recent messages' bodies by id, and their latest use: the compile and signature caches hang off these Buffers */
  private bodies = new Map<MessageId, { body: Buffer; use: number }>();
  private bodyBytes = 0;
  /**
   * Ids in the order of use, least recent from `usedHead` on; an id used again is queued again and its older
   * entries skipped. (Not the Map's own order: finding a Map's first entry after deleting from its front walks
   * every deleted slot, microseconds a message at 10,000 bodies.)
   */
  private used: { id: MessageId; use: number }[] = [];
  private usedHead = 0;
  private uses = 0;
  /** signatures of a stored body, by envelope sender domain (the signer's fallback when From has no key) */
  private signed = new WeakMap<Buffer, Map<string, Promise<SignResult>>>();

  constructor(
    private readonly keys: PersonalizeKeys,
    private readonly log: Logger,
    metrics: Metrics = new Metrics(),
  ) {
    this.counters = personalizeMetrics(metrics);
  }

  async outbound(message: StoredMessage, recipients: readonly Recipient[]): Promise<OutboundMessage[]> {
    const stored = this.cachesOn(message) ? this.remember(message) : message.body;
    const copies = await this.copies(message, stored, recipients);
    const transactions = new Map<string, OutboundMessage>();
    // recipients with the same bytes (the same Buffer) and return path share a transaction
    const bufferIds = new Map<Buffer, number>();
    for (const { recipient, envelopeFrom, body } of copies) {
      if (!bufferIds.has(body)) bufferIds.set(body, bufferIds.size);
      const key = `${bufferIds.get(body)} ${envelopeFrom}`;
      const t = transactions.get(key);
      if (t) t.recipients.push(recipient);
      else transactions.set(key, { messageId: message.id, envelopeFrom, recipients: [recipient], body });
    }
    const out = [...transactions.values()];
    for (const t of out) t.body = await this.sign(t.body, stored, t.envelopeFrom);
    return out;
  }

  /** Each recipient's envelope sender and unsigned bytes; `stored` itself wherever nothing changed. */
  private async copies(message: StoredMessage, stored: Buffer, recipients: readonly Recipient[]) {
    const { options } = message;
    const verp = usesVerp(message, this.keys.bounceDomain);
    const tracking = options.trackClicks || options.trackOpens;
    const unsubscribe = options.unsubscribe;
    if ((tracking || unsubscribe) && this.keys.publicUrl === "") {
      this.skip(message.id, recipients.length, "http.public_url is empty: no tracking links or List-Unsubscribe");
    }
    const linked = this.keys.publicUrl !== "";
    let failure: string | undefined;
    const copies = [];
    for (const r of recipients) {
      const recipient = { id: r.id, address: r.address };
      const envelopeFrom = verp ? this.keys.verp.verpAddress(r.id, this.keys.bounceDomain) : message.envelopeFrom;
      let body = stored;
      if (linked && (tracking || unsubscribe)) {
        const urls = trackingUrls(this.keys.publicUrl, this.keys.tokens, message.id, r.id);
        if (tracking) {
          const html = await personalizeHtml(stored, {
            clickUrl: options.trackClicks ? urls.click : undefined,
            openUrl: options.trackOpens ? urls.open : undefined,
            trackedPrefix: urls.clickPrefix,
          });
          if (!html.ok) failure = html.reason;
          // a message without HTML parts comes back as a copy of the same bytes: keep sharing the stored one
          else if (html.changedParts > 0) body = html.body;
        }
        if (unsubscribe) body = withListUnsubscribe(body, urls.unsubscribe);
      }
      copies.push({ recipient, envelopeFrom, body });
    }
    if (failure !== undefined) this.skip(message.id, recipients.length, failure);
    return copies;
  }

  /** Signs `body` last; the stored bytes are signed once per envelope domain and the signature reused. */
  private async sign(body: Buffer, stored: Buffer, envelopeFrom: string): Promise<Buffer> {
    if (!this.keys.signer.enabled) return body;
    let result: Promise<SignResult>;
    if (body === stored) {
      const domain = envelopeFrom.slice(envelopeFrom.lastIndexOf("@") + 1).toLowerCase();
      let known = this.signed.get(stored);
      if (!known) this.signed.set(stored, (known = new Map()));
      const cached = known.get(domain);
      if (cached) return (await cached).body;
      result = this.keys.signer.sign(body, envelopeFrom);
      known.set(domain, result);
      // a failed signature is not remembered: the next job tries again
      result.catch(() => known.delete(domain));
    } else {
      result = this.keys.signer.sign(body, envelopeFrom);
    }
    const signed = await result;
    for (const algorithm of signed.algorithms) this.counters.signatures.inc({ algorithm });
    return signed.body;
  }

  private skip(id: MessageId, copies: number, reason: string): void {
    this.counters.skipped.inc({ reason: skipReason(reason) }, copies);
    this.log.warn("personalize_skipped", { queue_id: id, reason, recipients: copies });
  }

  /**
   * Whether anything will be cached on this message's Buffer: its compiled HTML (click or open tracking) or its
   * signature. Only then is keeping the Buffer for the message's later jobs worth its memory: a relay that neither
   * tracks nor signs would otherwise hold its last 32 MiB of bodies (and their whole allocations) for nothing.
   */
  private cachesOn(message: StoredMessage): boolean {
    const tracked = message.options.trackClicks || message.options.trackOpens;
    return this.keys.signer.enabled || (tracked && this.keys.publicUrl !== "");
  }

  /** The Buffer this message's body was last seen as (bodies are never changed once stored), else this one. */
  private remember(message: StoredMessage): Buffer {
    const known = this.bodies.get(message.id);
    const body = known?.body.equals(message.body) ? known.body : message.body;
    if (known) this.bodyBytes -= known.body.length;
    const use = ++this.uses;
    this.bodies.set(message.id, { body, use });
    this.used.push({ id: message.id, use });
    this.bodyBytes += body.length;
    // the oldest go first; this message itself (last in line) stays
    while (this.bodyBytes > REMEMBER_BYTES && this.usedHead < this.used.length - 1) {
      const oldest = this.used[this.usedHead++]!;
      const entry = this.bodies.get(oldest.id);
      if (entry?.use !== oldest.use) continue; // used again since: queued again further on
      this.bodies.delete(oldest.id);
      this.bodyBytes -= entry.body.length;
    }
    this.compactUsed();
    return body;
  }

  /** Drops the queue's spent and skipped entries once they outnumber the live ones (amortised O(1) a call). */
  private compactUsed(): void {
    const spent = this.usedHead >= 1024 && this.usedHead * 2 >= this.used.length;
    const skipped = this.used.length - this.usedHead >= 2 * this.bodies.size + 1024;
    if (!spent && !skipped) return;
    this.used = this.used.slice(this.usedHead).filter((e) => this.bodies.get(e.id)?.use === e.use);
    this.usedHead = 0;
  }
}

/**
 * The `reason` label of a skipped rewrite: one of a few kinds (message/split.ts and message/parts.ts say why in
 * words that name charsets, sizes and parser errors, too many values for a metric label).
 */
export function skipReason(reason: string): string {
  for (const [pattern, kind] of SKIP_KINDS) if (pattern.test(reason)) return kind;
  return "other";
}

const SKIP_KINDS: readonly [RegExp, string][] = [
  [/public_url/, "no_public_url"],
  [/without its closing boundary/, "unclosed_multipart"],
  [/without a usable boundary/, "no_boundary"],
  [/nesting deeper/, "too_deep"],
  [/invalid base64/, "invalid_base64"],
  [/Content-Transfer-Encoding .* is unknown/, "unknown_encoding"],
  [/charset .* is not supported/, "unsupported_charset"],
  [/bytes that are not valid/, "invalid_bytes"],
  [/is over \d+ bytes/, "too_large"],
  [/unreadable MIME|do not add up/, "unreadable_mime"],
];
