/**
 * @module queue/claim-row — the pending recipient's row that leasing reads (claims and the expiry look, queue/claim.ts
 * and queue/expire.ts), and the ClaimedRecipient it stands for.
 */
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { ClaimedRecipient } from "./claim.ts";

/** A pending recipient's row as claims read it. */
export interface ClaimRow {
  id: string;
  message_id: string;
  address: string;
  domain: string;
  attempts: number;
  next_attempt_at: number;
}

/** The claimed recipient a row stands for. */
export function claimedFrom(r: ClaimRow): ClaimedRecipient {
  return {
    id: r.id as RecipientId,
    messageId: r.message_id as MessageId,
    address: r.address,
    domain: r.domain,
    attempts: r.attempts,
    dueAt: r.next_attempt_at,
  };
}
