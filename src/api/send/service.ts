/**
 * @module api/send/service — one send: replay an idempotent repeat (or refuse one with another payload), else
 * normalize the fields and hand the message to intake (which answers after the commit). Knows nothing of HTTP
 * but its errors' statuses.
 */
import { receivedField } from "../../message/headers.ts";
import type { Intake } from "../../intake/accept.ts";
import { IntakeError } from "../../intake/policy.ts";
import { ApiError } from "../../mail/errors.ts";
import { IdempotencyKeyTaken, type EnqueuedMessage } from "../../queue/enqueue.ts";
import type { MessageView, QueueInspector } from "../../queue/inspect.ts";
import { fingerprintOf } from "./fingerprint.ts";
import type { Principal } from "../auth.ts";
import type { SendBody } from "./model.ts";
import { idempotencyKeyOf, normalizeSend } from "./normalize.ts";

/** How long an idempotency key holds: a repeat after this is a new message. */
export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;

export interface SendOutcome {
  result: EnqueuedMessage;
  /** true when this is the stored answer to an earlier request with the same idempotency key */
  replayed: boolean;
  /** the envelope sender, given or defaulted */
  envelope: string;
}

export class SendService {
  constructor(
    private intake: Intake,
    private inspector: QueueInspector,
    private hostname: string,
    private now: () => number = Date.now,
  ) {}

  /** `clientIp` goes into the Received line, as SMTP intake writes one for its clients. */
  async send(who: Principal, fields: SendBody, idempotencyHeader: string | null, clientIp: string | null = null): Promise<SendOutcome> {
    const key = idempotencyKeyOf(fields.idempotency_key ?? idempotencyHeader ?? undefined);
    const hash = key === undefined ? undefined : await fingerprintOf(fields);
    if (key !== undefined) {
      const earlier = this.replay(who, key, hash!);
      if (earlier) return earlier;
    }
    const req = await normalizeSend(fields, this.hostname);
    try {
      const result = await this.intake.accept({
        userId: who.userId,
        allowedDomains: who.allowedDomains,
        envelopeFrom: req.envelopeFrom,
        recipients: req.recipients,
        raw: req.raw,
        read: req.read,
        trace: receivedHeader(clientIp, this.hostname, new Date(this.now())),
        source: "api",
        options: req.options,
        tag: req.tag,
        metadata: req.metadata,
        idempotencyKey: key,
        idempotencyHash: hash,
        // a key older than the window moves to this message, so the next repeat is answered from it
        idempotencyExpiredBefore: this.now() - IDEMPOTENCY_WINDOW_MS,
      });
      return { result, replayed: false, envelope: req.envelopeFrom };
    } catch (e) {
      // two requests with one key raced past the look-up: the unique index let only the first in
      if (key !== undefined && e instanceof IntakeError && e.cause instanceof IdempotencyKeyTaken) {
        const first = this.replay(who, key, hash!);
        if (first) return first;
      }
      throw e;
    }
  }

  /**
   * The answer to the message that holds `key` within the window, or null when none does. A message stored
   * under the key from another payload is a 409: answering with it would tell the client its new message was sent.
   */
  private replay(who: Principal, key: string, hash: string): SendOutcome | null {
    const earlier = this.inspector.findByIdempotencyKey(who.userId, key);
    if (!earlier || this.now() - earlier.message.createdAt >= IDEMPOTENCY_WINDOW_MS) return null;
    // mail stored before fingerprints were kept has none: the key alone decided then, and still does for it
    if (earlier.hash !== null && earlier.hash !== hash) {
      throw new ApiError(409, "conflict", `idempotency key ${JSON.stringify(key)} was used for another request (message ${earlier.message.id}); use a new key for a new message`, "idempotency_key");
    }
    return { result: answerOf(earlier.message), replayed: true, envelope: earlier.message.envelopeFrom };
  }
}

/** The 202 body the first request got: recipients were then queued, or suppressed. */
function answerOf(m: MessageView): EnqueuedMessage {
  return {
    id: m.id,
    messageIdHeader: m.messageIdHeader,
    recipients: m.recipients.map((r) => ({ address: r.address, id: r.id, status: r.status === "suppressed" ? "suppressed" : "queued" })),
  };
}

/** The trace field for an HTTP submission: it names the client's address, and lets the DSN rules count hops. */
export function receivedHeader(clientIp: string | null, hostname: string, now: Date): Buffer {
  const from = clientIp && /^[0-9A-Fa-f:.]+$/.test(clientIp) ? `[${clientIp}]` : null;
  return receivedField({ from, by: hostname, with: "HTTP", at: now });
}
