/**
 * @module queue/admin — the changes an operator makes to the queue by hand (Postfix `postqueue -f/-i`,
 * `postsuper -d/-h/-H`), for `outpost queue retry|hold|release|delete|flush`. Reading the queue is queue/inspect.ts.
 *
 * A command names one message, one recipient, or every pending recipient matching a filter. It runs in two steps:
 * the matching rows are read first (a read transaction: `serve` goes on working meanwhile), then changed in
 * write transactions of about 2,000 recipients, whole messages at a time, one statement each that checks every
 * row again (a row `serve` settled or leased in between is left alone). So a command over a million recipients
 * never holds the write lock for long, and the caller hears of each batch after its commit (to log what really
 * changed).
 *
 * - retry: a waiting recipient (queued/deferred, not in flight, not yet due) becomes due now.
 * - hold: a queued/deferred recipient that is not in flight becomes `held`. No claim sees a held row (it is in
 *   none of the claim's partial indexes), however long ago it came due. One in flight is left alone: its
 *   attempt's result could not be recorded on a held row.
 * - release: a held recipient goes back to `deferred` (`queued` if never attempted), due now.
 * - delete: the recipients are removed; so is a message left with none. Deleting a message by its id removes it
 *   with all its recipients, finished ones included. A recipient in flight at that moment may still be
 *   delivered; its result then finds no row and is dropped. No event is recorded (there is no event type for it;
 *   the earlier events stay as history).
 */
import type { Database, Statement } from "bun:sqlite";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import { bodyFilesOf } from "./bodies.ts";

export type AdminAction = "retry" | "hold" | "release" | "delete";

/** The states `--status` can select: not finished. */
export type OpenStatus = "queued" | "deferred" | "held";
export const OPEN_STATUSES: readonly OpenStatus[] = ["queued", "deferred", "held"];

/** The states each action changes; any other row it is pointed at stays as it is. */
export const ACTS_ON: Record<AdminAction, readonly OpenStatus[]> = {
  retry: ["queued", "deferred"],
  hold: ["queued", "deferred"],
  release: ["held"],
  delete: ["queued", "deferred", "held"],
};

/** Narrows "every open recipient"; all given criteria must match. */
export interface QueueFilter {
  /** envelope sender: an address (case-insensitive), "@domain" for any sender at that domain, or "" for <> */
  sender?: string;
  /** the recipient's domain, lower case */
  domain?: string;
  status?: OpenStatus;
  /** only messages queued at least this long ago (ms) */
  olderThanMs?: number;
}

export type Target =
  | { kind: "message"; id: MessageId }
  | { kind: "recipient"; id: RecipientId }
  | { kind: "all"; filter: QueueFilter };

/** One message's recipients changed by one action, committed. */
export interface AffectedMessage {
  id: MessageId;
  userId: UserId | null;
  recipients: { id: RecipientId; address: string }[];
  /** delete only: the message itself is gone (no recipient of it is left) */
  messageDeleted: boolean;
}

export interface AdminResult {
  /** how many messages had at least one recipient changed */
  messages: number;
  recipients: number;
  /** retry/hold: recipients left alone because a delivery attempt held them */
  inFlight: number;
  /** delete: messages removed along with their last recipients */
  messagesDeleted: number;
}

export interface AdminOptions {
  /**
   * Recipients changed per write transaction (default 2,000; whole messages, so a message may make one a little
   * bigger). Each holds the database's write lock for some tens of ms, so `serve` goes on between them.
   */
  batch?: number;
}

/**
 * A row the action may change: only what finds it again, so a million of them fit in memory; what it is (its
 * address) the write reads back, and its owner is read once per message.
 */
interface Candidate {
  id: RecipientId;
  messageId: MessageId;
}

interface CandidateRow {
  id: string;
  message_id: string;
  status: string;
  next_attempt_at: number;
  lease_until: number | null;
}

const CANDIDATE_COLUMNS = `r.id, r.message_id, r.status, r.next_attempt_at, r.lease_until`;
const NOT_LEASED = `(lease_until IS NULL OR lease_until <= $now)`;

/** A message row as a delete returns it: the body file it named, if any (queue/bodies.ts reclaims it). */
interface DroppedMessage {
  body_file: number | null;
}

export class QueueAdmin {
  private messageExists: Statement<{ id: string }, [string]>;
  private owner: Statement<{ user_id: number | null }, [string]>;
  private recipientExists: Statement<{ id: string }, [string]>;
  private ofMessage: Statement<CandidateRow, [string]>;
  private ofRecipient: Statement<CandidateRow, [string]>;
  private addresses: Statement<{ id: string; address: string }, [string]>;
  private change: Record<AdminAction, Statement<{ id: string; address: string }, [{ ids: string; now: number }]>>;
  private owners: Statement<{ id: string; user_id: number | null }, [string]>;
  private dropEmptyMessage: Statement<DroppedMessage, [string]>;
  private dropMessage: Statement<DroppedMessage, [string]>;

  private batch: number;

  constructor(
    private sqlite: Database,
    private now: () => number = Date.now,
    opts: AdminOptions = {},
  ) {
    this.batch = opts.batch ?? 2_000;
    this.messageExists = sqlite.query("SELECT id FROM messages WHERE id = ?");
    this.recipientExists = sqlite.query("SELECT id FROM recipients WHERE id = ?");
    this.owner = sqlite.query("SELECT user_id FROM messages WHERE id = ?");
    this.ofMessage = sqlite.query(`SELECT ${CANDIDATE_COLUMNS} FROM recipients r WHERE r.message_id = ? ORDER BY r.rowid`);
    this.ofRecipient = sqlite.query(`SELECT ${CANDIDATE_COLUMNS} FROM recipients r WHERE r.id = ?`);
    this.addresses = sqlite.query("SELECT id, address FROM recipients WHERE message_id = ? ORDER BY rowid");
    // one statement per batch ($ids: a JSON array of recipient ids); each re-checks the row: between the read and
    // the write, serve may have settled or leased it
    const batch = `id IN (SELECT value FROM json_each($ids))`;
    this.change = {
      retry: sqlite.query(
        `UPDATE recipients SET next_attempt_at = $now, updated_at = $now
         WHERE ${batch} AND status IN ('queued','deferred') AND next_attempt_at > $now AND ${NOT_LEASED} RETURNING id, address`,
      ),
      hold: sqlite.query(
        `UPDATE recipients SET status = 'held', lease_until = NULL, updated_at = $now
         WHERE ${batch} AND status IN ('queued','deferred') AND ${NOT_LEASED} RETURNING id, address`,
      ),
      release: sqlite.query(
        `UPDATE recipients SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,
           next_attempt_at = $now, lease_until = NULL, updated_at = $now
         WHERE ${batch} AND status = 'held' RETURNING id, address`,
      ),
      delete: sqlite.query(`DELETE FROM recipients WHERE ${batch} AND status IN ('queued','deferred','held') RETURNING id, address`),
    };
    this.owners = sqlite.query("SELECT id, user_id FROM messages WHERE id IN (SELECT value FROM json_each(?))");
    this.dropEmptyMessage = sqlite.query(
      "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM recipients WHERE message_id = ?1) RETURNING body_file",
    );
    this.dropMessage = sqlite.query("DELETE FROM messages WHERE id = ? RETURNING body_file");
  }

  /** What an id names: a message, else a recipient, else null. */
  resolve(id: string): Target | null {
    if (this.messageExists.get(id)) return { kind: "message", id: id as MessageId };
    if (this.recipientExists.get(id)) return { kind: "recipient", id: id as RecipientId };
    return null;
  }

  /**
   * Applies `action` to the target's recipients in the states it acts on. `committed` hears of each batch after
   * its commit, one entry per message, in message id order.
   */
  apply(action: AdminAction, target: Target, committed: (batch: AffectedMessage[]) => void = () => {}): AdminResult {
    const now = this.now();
    if (action === "delete" && target.kind === "message") return this.deleteMessage(target.id, committed);
    const { todo, inFlight } = this.candidates(action, target, now);
    const result: AdminResult = { messages: 0, recipients: 0, inFlight, messagesDeleted: 0 };
    const bodyFiles: number[] = [];
    for (const batch of batches(todo, this.batch)) {
      const affected = this.sqlite.transaction(() => this.applyBatch(action, batch, now, bodyFiles)).immediate();
      if (affected.length === 0) continue;
      result.messages += affected.length;
      for (const m of affected) {
        result.recipients += m.recipients.length;
        if (m.messageDeleted) result.messagesDeleted++;
      }
      committed(affected);
    }
    if (bodyFiles.length > 0) bodyFilesOf(this.sqlite)?.reclaim(bodyFiles);
    return result;
  }

  /**
   * The rows the action may change, read in one read transaction and sorted by message (then as read), and how
   * many it must leave alone because an attempt holds them (retry, hold).
   */
  private candidates(action: AdminAction, target: Target, now: number): { todo: Candidate[]; inFlight: number } {
    const statuses = new Set<string>(ACTS_ON[action]);
    const todo: Candidate[] = [];
    let inFlight = 0;
    const take = (r: CandidateRow) => {
      if (!statuses.has(r.status)) return;
      if ((action === "retry" || action === "hold") && r.lease_until !== null && r.lease_until > now) inFlight++;
      else if (action !== "retry" || r.next_attempt_at > now) todo.push({ id: r.id as RecipientId, messageId: r.message_id as MessageId });
    };
    this.sqlite.transaction(() => {
      if (target.kind === "message") for (const r of this.ofMessage.iterate(target.id)) take(r);
      else if (target.kind === "recipient") for (const r of this.ofRecipient.iterate(target.id)) take(r);
      else {
        for (const { sql, params } of selections(action, target.filter, now)) {
          for (const r of this.sqlite.query<CandidateRow, [Record<string, string | number>]>(sql).iterate(params)) take(r);
        }
      }
    })();
    // a stable sort: within a message the rows keep their order
    todo.sort((a, b) => (a.messageId < b.messageId ? -1 : a.messageId > b.messageId ? 1 : 0));
    return { todo, inFlight };
  }

  /** One batch in the caller's transaction; the body files of messages it deleted are added to `bodyFiles`. */
  private applyBatch(action: AdminAction, batch: Candidate[], now: number, bodyFiles: number[]): AffectedMessage[] {
    const changed = new Map(this.change[action].all({ ids: JSON.stringify(batch.map((c) => c.id)), now }).map((r) => [r.id, r.address]));
    if (changed.size === 0) return [];
    const messageIds = [...new Set(batch.filter((c) => changed.has(c.id)).map((c) => c.messageId))];
    const owners = new Map(this.owners.all(JSON.stringify(messageIds)).map((r) => [r.id, r.user_id as UserId | null]));
    const out = new Map<MessageId, AffectedMessage>();
    for (const c of batch) {
      const address = changed.get(c.id);
      if (address === undefined) continue;
      let m = out.get(c.messageId);
      if (!m) out.set(c.messageId, (m = { id: c.messageId, userId: owners.get(c.messageId) ?? null, recipients: [], messageDeleted: false }));
      m.recipients.push({ id: c.id, address });
    }
    if (action === "delete") {
      for (const m of out.values()) {
        const dropped = this.dropEmptyMessage.get(m.id);
        m.messageDeleted = dropped !== null;
        if (dropped?.body_file != null) bodyFiles.push(dropped.body_file);
      }
    }
    return [...out.values()];
  }

  /** `delete MESSAGE-ID` (postsuper -d): the message and every recipient row it has, finished ones included. */
  private deleteMessage(id: MessageId, committed: (batch: AffectedMessage[]) => void): AdminResult {
    const deleted = this.sqlite.transaction((): { affected: AffectedMessage; bodyFile: number | null } | null => {
      const owner = this.owner.get(id);
      if (!owner) return null;
      const recipients = this.addresses.all(id).map((r) => ({ id: r.id as RecipientId, address: r.address }));
      // explicit rather than relying on ON DELETE CASCADE, which needs foreign_keys on in this connection
      this.sqlite.run("DELETE FROM recipients WHERE message_id = ?", [id]);
      const bodyFile = this.dropMessage.get(id)?.body_file ?? null;
      return { affected: { id, userId: owner.user_id as UserId | null, recipients, messageDeleted: true }, bodyFile };
    }).immediate();
    if (!deleted) return { messages: 0, recipients: 0, inFlight: 0, messagesDeleted: 0 };
    const { affected, bodyFile } = deleted;
    if (bodyFile !== null) bodyFilesOf(this.sqlite)?.reclaim([bodyFile]);
    committed([affected]);
    return { messages: 1, recipients: affected.recipients.length, inFlight: 0, messagesDeleted: 1 };
  }
}

/**
 * The reads of `--all` with a filter: one per state, each through the partial index of that state (or
 * `recipients_domain` for a domain), so finished rows are never read.
 */
export function selections(action: AdminAction, filter: QueueFilter, now: number): { sql: string; params: Record<string, string | number> }[] {
  const where: string[] = ["m.created_at <= $before"];
  const params: Record<string, string | number> = { before: now - (filter.olderThanMs ?? 0) };
  if (filter.domain !== undefined) {
    where.push("r.domain = $domain");
    params.domain = filter.domain;
  }
  if (filter.sender?.startsWith("@")) {
    where.push("lower(m.envelope_from) LIKE $sender ESCAPE '\\'");
    params.sender = `%${filter.sender.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}`;
  } else if (filter.sender !== undefined) {
    where.push("lower(m.envelope_from) = $sender");
    params.sender = filter.sender.toLowerCase();
  }
  const states = ACTS_ON[action].filter((s) => filter.status === undefined || s === filter.status);
  return states.map((state) => {
    // the pending states' indexes need their own predicate spelt out to be usable
    const index = state === "held" ? "r.status = 'held'" : `r.status IN ('queued','deferred') AND r.status = '${state}'`;
    const sql = `SELECT ${CANDIDATE_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.message_id WHERE ${index} AND ${where.join(" AND ")}`;
    return { sql, params };
  });
}

/** Consecutive runs of about `size` rows that never split a message. */
function* batches(rows: Candidate[], size: number): Generator<Candidate[]> {
  let start = 0;
  while (start < rows.length) {
    let end = Math.min(start + size, rows.length);
    while (end < rows.length && rows[end]!.messageId === rows[end - 1]!.messageId) end++;
    yield rows.slice(start, end);
    start = end;
  }
}
