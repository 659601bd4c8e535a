/**
 * @module delivery/job — the scheduler's unit of work: one message's recipients at one destination, sent in one
 * go; and the results a job gets when it is settled without being sent.
 */
import type { MessageId, RecipientId } from "../mail/ids.ts";
import type { ClaimedRecipient } from "../queue/claim.ts";
import { enhancedFor } from "./classify.ts";
import type { RecipientResult } from "./types.ts";

export interface Job {
  messageId: MessageId;
  recipients: ClaimedRecipient[];
  /** when it was claimed (the scheduler's clock) */
  claimedAt: number;
  /** some recipient was tried before: it waits in the retry lane */
  retry: boolean;
  /** sent once already on a kept connection that turned out dead */
  retried?: boolean;
}

/** A temporary failure that no server answered (connection, policy, a local error): deferred. */
export function localFailure(id: RecipientId, reason: string, mx?: string, code = 0): RecipientResult {
  return { recipientId: id, outcome: "deferred", code, enhanced: enhancedFor(code >= 400 && code < 500 ? code : 0, undefined), reply: reason, mx };
}

export function groupBy<T, K>(items: readonly T[], key: (t: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const it of items) push(m, key(it), it);
  return m;
}

export function push<K, T>(m: Map<K, T[]>, k: K, v: T): void {
  const a = m.get(k);
  if (a) a.push(v);
  else m.set(k, [v]);
}
