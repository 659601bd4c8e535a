/**
 * @module delivery/personalize — what each recipient at a destination is sent: the stored message and its
 * recipients there → the SMTP transactions (envelope + bytes) to make. The scheduler calls it without knowing
 * what it changes; per-recipient work (VERP return path today) lives here.
 *
 * VERP: with bounce tracking, every recipient gets its own MAIL FROM `b+{token}@{bounce_domain}` (bounce/verp.ts),
 * so a bounce names its recipient whatever the report looks like — and recipients with different return paths
 * cannot share a transaction. The others still share one. A message with the null sender keeps it (a DSN is
 * sent from `<>` and must never be answered).
 */
import type { StoredMessage } from "../queue/claim.ts";
import type { RecipientId } from "../mail/ids.ts";
import type { Verp } from "../bounce/verp.ts";
import type { OutboundMessage } from "./types.ts";

export interface PersonalizeKeys {
  verp: Verp;
  /** tracking.bounce_domain; "" turns VERP off */
  bounceDomain: string;
}

/** Does this message go out with VERP return paths? (Then bounces come back to us, not to its sender.) */
export function usesVerp(message: Pick<StoredMessage, "options" | "envelopeFrom">, bounceDomain: string): boolean {
  return message.options.trackBounces && bounceDomain !== "" && message.envelopeFrom !== "";
}

export function personalize(
  message: StoredMessage,
  recipients: readonly { id: RecipientId; address: string }[],
  keys: PersonalizeKeys,
): OutboundMessage[] {
  const base = { messageId: message.id, body: message.body };
  if (!usesVerp(message, keys.bounceDomain)) {
    return [{ ...base, envelopeFrom: message.envelopeFrom, recipients: recipients.map(({ id, address }) => ({ id, address })) }];
  }
  return recipients.map(({ id, address }) => ({
    ...base,
    envelopeFrom: keys.verp.verpAddress(id, keys.bounceDomain),
    recipients: [{ id, address }],
  }));
}
