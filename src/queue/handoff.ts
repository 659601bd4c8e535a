/**
 * @module queue/handoff — the bodies of messages just committed, handed from intake to delivery so that delivery
 * need not read back from the store what intake has just written: a small map by message id, bounded in bytes,
 * oldest out first. A body is taken once; a miss (never offered, pushed out, taken already) is never wrong: the
 * caller reads the store, which stays the truth.
 *
 * Stored bodies are written once (INSERT) and never changed; a deleted message has no row, so its load ends
 * before the map is asked. A body whose length is not the stored one is not taken either (then it is not the
 * stored body, however it came to differ), and is dropped.
 *
 * The interface is put/take by message id, so a delivery loop in another thread can keep its own map and be fed
 * from the intake thread by `postMessage({ id, body })`.
 */
import type { MessageId } from "../mail/ids.ts";
import type { StoredMessage } from "./claim.ts";
import type { EnqueuedMessage, NewMessage } from "./enqueue.ts";

/** What the store's row holds after its body (reading those columns walks the body's pages too), and the body. */
export type HandedOver = Pick<StoredMessage, "body" | "options" | "messageIdHeader">;

export interface BodyHandoff {
  /** Offers a message whose commit has returned, as stored (its body's bytes are not written to afterwards). */
  put(id: MessageId, message: HandedOver): void;
  /** What was offered for `id`, when it is here and its body `storedLength` bytes long; it leaves the map either way. */
  take(id: MessageId, storedLength: number): HandedOver | undefined;
}

/** Enough for the messages of a few claims in flight (a claim takes them within ~50 ms of their commit). */
const DEFAULT_MAX_BYTES = 16 * 1024 * 1024;

export class RecentBodies implements BodyHandoff {
  private readonly bodies = new Map<MessageId, HandedOver>();
  private held = 0;

  constructor(readonly maxBytes = DEFAULT_MAX_BYTES) {}

  /** Bytes kept alive by the bodies in the map (their whole allocations: see heldBytes). */
  get bytes(): number {
    return this.held;
  }

  get size(): number {
    return this.bodies.size;
  }

  put(id: MessageId, message: HandedOver): void {
    this.drop(id);
    // one body may not push out all the others (a message near the size limit is read from the store)
    if (heldBytes(message.body) > this.maxBytes / 4) return;
    this.bodies.set(id, message);
    this.held += heldBytes(message.body);
    for (const old of this.bodies.keys()) {
      if (this.held <= this.maxBytes) break;
      this.drop(old);
    }
  }

  take(id: MessageId, storedLength: number): HandedOver | undefined {
    const message = this.bodies.get(id);
    if (message === undefined) return undefined;
    this.drop(id);
    return message.body.length === storedLength ? message : undefined;
  }

  private drop(id: MessageId): void {
    const message = this.bodies.get(id);
    if (message === undefined) return;
    this.bodies.delete(id);
    this.held -= heldBytes(message.body);
  }
}

/**
 * What keeping `body` costs: its whole allocation, not only its bytes. A message received over SMTP is a view
 * of a buffer with room in front and space after it (smtp/data.ts), which stays alive as long as the view does.
 */
function heldBytes(body: Buffer): number {
  return Math.max(body.length, body.buffer.byteLength);
}

/** This process's hand-over: the queue's enqueue fills it after each commit, its claim side takes from it. */
export const recentBodies: BodyHandoff = new RecentBodies();

/**
 * A committed message as delivery loads it (the row holds these values as written). A body that is a small view
 * of a large allocation (a 2 KiB message in SMTP intake's 64 KiB receive buffer) is handed over as a copy of its
 * own: whatever keeps it later (this map, delivery's caches, which count a body's length) would otherwise keep
 * the whole allocation alive, ~30 times the bytes they count.
 */
export function handedOver(msg: Pick<NewMessage, "body" | "options">, stored: Pick<EnqueuedMessage, "messageIdHeader">): HandedOver {
  return { body: compact(msg.body), options: msg.options, messageIdHeader: stored.messageIdHeader };
}

/**
 * Past this a body is never copied whole (intake keeps large messages in one buffer: smtp/data.ts); one in an
 * allocation far larger than itself is then not taken into the map at all (`put` weighs the allocation).
 */
const COMPACT_MAX = 256 * 1024;

function compact(body: Buffer): Buffer {
  if (body.length > COMPACT_MAX || body.buffer.byteLength <= 2 * body.length + 4096) return body;
  // allocUnsafeSlow: an allocation of exactly its size, not a slice of Buffer's shared pool
  const own = Buffer.allocUnsafeSlow(body.length);
  body.copy(own);
  return own;
}
