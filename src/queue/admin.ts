/**
 * @module queue/admin — the changes an operator may make to the queue by hand (Postfix `postqueue -f`,
 * `postsuper -d`), for `outpost queue …`. Reading the queue is queue/inspect.ts.
 *
 * `retry` only moves `next_attempt_at` of pending recipients that are not in flight; a running server picks the
 * change up the next time its scheduler looks at the queue. `delete` removes the message and its recipients and
 * records no event (SPEC has no event type for it; the earlier events stay as history). A recipient in flight at
 * that moment may still be delivered; its result then finds no row and is dropped.
 */
import type { Database, Statement } from "bun:sqlite";

export class QueueAdmin {
  private exists: Statement;
  private retryMessage: Statement;
  private retryEverything: Statement;
  private remove: Statement;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
  ) {
    this.exists = sqlite.query("SELECT 1 FROM messages WHERE id = ?");
    const retryable = `status IN ('queued','deferred') AND next_attempt_at > ?1 AND (lease_until IS NULL OR lease_until <= ?1)`;
    this.retryMessage = sqlite.query(
      `UPDATE recipients SET next_attempt_at = ?1, updated_at = ?1 WHERE message_id = ?2 AND ${retryable}`,
    );
    this.retryEverything = sqlite.query(
      `UPDATE recipients INDEXED BY recipients_due SET next_attempt_at = ?1, updated_at = ?1 WHERE ${retryable}`,
    );
    this.remove = sqlite.query("DELETE FROM messages WHERE id = ?");
  }

  /** Makes one message's waiting recipients due now. Returns how many, or null for an unknown id. */
  retry(id: string): number | null {
    if (!this.exists.get(id)) return null;
    return this.retryMessage.run(this.now(), id).changes;
  }

  /** Makes every waiting recipient due now (`queue flush`). Returns how many. */
  retryAll(): number {
    return this.retryEverything.run(this.now()).changes;
  }

  /** Removes a message and its recipients. Returns false for an unknown id. */
  delete(id: string): boolean {
    // explicit rather than relying on ON DELETE CASCADE, which needs foreign_keys on in this connection
    return this.sqlite.transaction(() => {
      this.sqlite.run("DELETE FROM recipients WHERE message_id = ?", [id]);
      return this.remove.run(id).changes > 0;
    }).immediate();
  }
}
