/**
 * @module bounce/inbound — the mail kept at the bounce domain (postmaster, abuse, reports that could not be
 * parsed or matched): keep, list, show, prune. The `inbound_mail` table is this module's.
 */
import type { Database, Statement } from "bun:sqlite";
import type { InboundId } from "../mail/ids.ts";

export type InboundKind = "postmaster" | "abuse" | "unparsed" | "unmatched" | "failed";

export interface KeptMail {
  id: InboundId;
  receivedAt: number;
  kind: InboundKind;
  /** the bounce-domain recipients of the transaction, comma-separated */
  rcpt: string;
  mailFrom: string;
  clientIp: string;
  size: number;
  reason: string;
}

export interface KeptMailWithRaw extends KeptMail {
  raw: Buffer;
}

interface Row {
  id: string;
  received_at: number;
  kind: string;
  rcpt: string;
  mail_from: string;
  client_ip: string;
  size: number;
  reason: string;
  raw?: Uint8Array;
}

const COLUMNS = "id, received_at, kind, rcpt, mail_from, client_ip, size, reason";

export class InboundStore {
  private insert: Statement;
  private newest: Statement<Row, [number]>;
  private one: Statement<Row, [string]>;
  private older: Statement;

  constructor(sqlite: Database) {
    this.insert = sqlite.prepare(
      `INSERT INTO inbound_mail (${COLUMNS}, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.newest = sqlite.prepare(`SELECT ${COLUMNS} FROM inbound_mail ORDER BY received_at DESC, id DESC LIMIT ?`);
    this.one = sqlite.prepare(`SELECT ${COLUMNS}, raw FROM inbound_mail WHERE id = ?`);
    this.older = sqlite.prepare("DELETE FROM inbound_mail WHERE received_at < ?");
  }

  /** Stores the mail; inside the caller's transaction when one is open. */
  keep(m: KeptMailWithRaw): void {
    this.insert.run(m.id, m.receivedAt, m.kind, m.rcpt, m.mailFrom, m.clientIp, m.size, m.reason, m.raw);
  }

  /** Newest first; `limit` 0 is all. */
  list(limit = 0): KeptMail[] {
    return this.newest.all(limit === 0 ? -1 : limit).map(toKept);
  }

  get(id: string): KeptMailWithRaw | null {
    const row = this.one.get(id);
    return row ? { ...toKept(row), raw: Buffer.from(row.raw!) } : null;
  }

  /** Deletes what was received before `before` (ms); returns how many. */
  prune(before: number): number {
    return this.older.run(before).changes;
  }
}

function toKept(r: Row): KeptMail {
  return {
    id: r.id as InboundId,
    receivedAt: r.received_at,
    kind: r.kind as InboundKind,
    rcpt: r.rcpt,
    mailFrom: r.mail_from,
    clientIp: r.client_ip,
    size: r.size,
    reason: r.reason,
  };
}
