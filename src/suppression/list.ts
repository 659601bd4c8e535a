/** @module suppression/list — addresses we never send to: check, add, remove, list. */
import type { Database, Statement } from "bun:sqlite";
import { eq } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { suppressions } from "./schema.ts";

export type SuppressionReason = "manual" | "hard_bounce" | "complaint";

export interface Suppression {
  address: string;
  reason: SuppressionReason;
  createdAt: number;
}

const norm = (a: string) => a.trim().toLowerCase();

export function listSuppressions(db: Db): Suppression[] {
  return db.select().from(suppressions).orderBy(suppressions.address).all() as Suppression[];
}

/** Adds (or keeps) an address; returns true when it was new. */
export function addSuppression(db: Db, address: string, reason: SuppressionReason = "manual", now = Date.now()): boolean {
  return new SuppressionWriter(db.$client).add(address, reason, now);
}

/** Returns true when the address was on the list. */
export function removeSuppression(db: Db, address: string): boolean {
  return db.delete(suppressions).where(eq(suppressions.address, norm(address))).returning().all().length > 0;
}

const amongStatements = new WeakMap<Db, { one: Statement<{ a: string }, [string]>; many: Statement<{ a: string }, [string]> }>();

/**
 * The subset of `addresses` that is suppressed (lower-cased). Runs for every submission, so it is one
 * statement prepared once per store (the list travels as JSON) rather than a query built per call.
 */
export function suppressedAmong(db: Db, addresses: string[]): Set<string> {
  if (addresses.length === 0) return new Set();
  let stmt = amongStatements.get(db);
  if (!stmt) {
    stmt = {
      one: db.$client.prepare("SELECT address AS a FROM suppressions WHERE address = ?"),
      many: db.$client.prepare("SELECT address AS a FROM suppressions WHERE address IN (SELECT value FROM json_each(?))"),
    };
    amongStatements.set(db, stmt);
  }
  const rows = addresses.length === 1 ? stmt.one.all(norm(addresses[0]!)) : stmt.many.all(JSON.stringify(addresses.map(norm)));
  return new Set(rows.map((r) => r.a));
}

/**
 * Adds addresses on a raw connection, inside the caller's transaction: delivery's settle, so the hard bounce
 * that proved an address bad and its place on the list commit together.
 */
export class SuppressionWriter {
  private insert: Statement;

  constructor(sqlite: Database) {
    this.insert = sqlite.query("INSERT INTO suppressions (address, reason, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING");
  }

  /** True when the address was new to the list. */
  add(address: string, reason: SuppressionReason, now: number): boolean {
    return this.insert.run(norm(address), reason, now).changes > 0;
  }
}
