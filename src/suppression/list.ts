/**
 * @module suppression/list — addresses we never send to, one list per user: check, add, remove, list.
 *
 * An entry belongs to the user whose mail caused it (a hard bounce, a complaint, an unsubscribe) or who added
 * it, and stops only that user's mail. Mail without a user (trusted networks, our own DSNs) has its own
 * ownerless list, `owner` null here and user_id 0 in the table. Addresses are kept as their comparison key
 * (mail/address.ts), so `Foo@Bücher.example` and `"foo"@xn--bcher-kva.example` are one entry.
 */
import type { Database, Statement } from "bun:sqlite";
import { and, asc, eq, ne, sql } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import { addressKey } from "../mail/address.ts";
import type { UserId } from "../mail/ids.ts";
import { suppressions } from "./schema.ts";

export const SUPPRESSION_REASONS = ["manual", "hard_bounce", "complaint", "unsubscribe"] as const;
export type SuppressionReason = (typeof SUPPRESSION_REASONS)[number];

export function isSuppressionReason(s: string): s is SuppressionReason {
  return (SUPPRESSION_REASONS as readonly string[]).includes(s);
}

/** A user's list, or null for the ownerless one. */
export type SuppressionOwner = UserId | null;

export interface Suppression {
  owner: SuppressionOwner;
  /** the comparison key */
  address: string;
  reason: SuppressionReason;
  createdAt: number;
}

const ownerColumn = (owner: SuppressionOwner): number => owner ?? 0;

function toSuppression(row: typeof suppressions.$inferSelect): Suppression {
  return { owner: row.userId === 0 ? null : (row.userId as UserId), address: row.address, reason: row.reason as SuppressionReason, createdAt: row.createdAt };
}

/** One list, by address. */
export function listSuppressions(db: Db, owner: SuppressionOwner): Suppression[] {
  return db.select().from(suppressions).where(eq(suppressions.userId, ownerColumn(owner))).orderBy(suppressions.address).all().map(toSuppression);
}

/** Every list (the operator's view), by owner (ownerless first), then address. */
export function listAllSuppressions(db: Db): Suppression[] {
  return db.select().from(suppressions).orderBy(asc(suppressions.userId), asc(suppressions.address)).all().map(toSuppression);
}

export function getSuppression(db: Db, owner: SuppressionOwner, address: string): Suppression | null {
  const row = db.select().from(suppressions).where(and(eq(suppressions.userId, ownerColumn(owner)), eq(suppressions.address, addressKey(address)))).get();
  return row ? toSuppression(row) : null;
}

/** Adds (or keeps) an address on `owner`'s list; returns true when it was new. */
export function addSuppression(db: Db, owner: SuppressionOwner, address: string, reason: SuppressionReason = "manual", now = Date.now()): boolean {
  return new SuppressionWriter(db.$client).add(owner, address, reason, now);
}

/**
 * Removes an address from `owner`'s list. A `complaint` entry stays unless `complaints` is "remove" (the
 * operator may; a user may not take back what their recipient reported): then the answer is "complaint".
 */
export function removeSuppression(
  db: Db,
  owner: SuppressionOwner,
  address: string,
  complaints: "keep" | "remove",
): "removed" | "absent" | "complaint" {
  const entry = and(eq(suppressions.userId, ownerColumn(owner)), eq(suppressions.address, addressKey(address)));
  const removable = complaints === "remove" ? entry : and(entry, ne(suppressions.reason, "complaint"));
  if (db.delete(suppressions).where(removable).returning().all().length > 0) return "removed";
  return getSuppression(db, owner, address) ? "complaint" : "absent";
}

/** Drops a user's whole list (the user is being removed); returns how many entries it held. */
export function removeListOf(db: Db, owner: UserId): number {
  return db.delete(suppressions).where(eq(suppressions.userId, owner)).returning({ n: sql`1` }).all().length;
}

interface AmongStatements {
  one: Statement<{ a: string }, [number, string]>;
  many: Statement<{ a: string }, [number, string]>;
}
const amongStatements = new WeakMap<Db, AmongStatements>();

/**
 * The keys (mail/address.ts addressKey) of those `addresses` on `owner`'s list. Runs for every submission, so it
 * is one statement prepared once per store (the addresses travel as JSON), using the (user_id, address) key.
 */
export function suppressedAmong(db: Db, owner: SuppressionOwner, addresses: readonly string[]): Set<string> {
  if (addresses.length === 0) return new Set();
  let stmt = amongStatements.get(db);
  if (!stmt) {
    stmt = {
      one: db.$client.prepare("SELECT address AS a FROM suppressions WHERE user_id = ? AND address = ?"),
      many: db.$client.prepare("SELECT address AS a FROM suppressions WHERE user_id = ? AND address IN (SELECT value FROM json_each(?))"),
    };
    amongStatements.set(db, stmt);
  }
  const user = ownerColumn(owner);
  if (addresses.length === 1) {
    const row = stmt.one.get(user, addressKey(addresses[0]!));
    return row ? new Set([row.a]) : new Set();
  }
  return new Set(stmt.many.all(user, JSON.stringify(addresses.map(addressKey))).map((r) => r.a));
}

/**
 * `suppressedAmong`, read when first asked rather than now. Intake hands it to the enqueuer, which asks inside the
 * transaction that stores the message: the read then joins that transaction instead of opening a read transaction
 * of its own (in WAL mode most of a lookup's cost), and sees the list as it stands when the message is stored.
 */
export function suppressedWhenAsked(db: Db, owner: SuppressionOwner, addresses: readonly string[]): ReadonlySet<string> {
  return new SetWhenAsked(() => suppressedAmong(db, owner, addresses));
}

/** A set read on first use, then kept. */
class SetWhenAsked implements ReadonlySet<string> {
  private set: Set<string> | undefined;

  constructor(private read: () => Set<string>) {}

  private get loaded(): Set<string> {
    return (this.set ??= this.read());
  }

  has(key: string) {
    return this.loaded.has(key);
  }
  get size() {
    return this.loaded.size;
  }
  forEach(fn: (value: string, key: string, set: ReadonlySet<string>) => void, thisArg?: unknown) {
    for (const v of this.loaded) fn.call(thisArg, v, v, this);
  }
  entries() {
    return this.loaded.entries();
  }
  keys() {
    return this.loaded.keys();
  }
  values() {
    return this.loaded.values();
  }
  [Symbol.iterator]() {
    return this.loaded[Symbol.iterator]();
  }
  union<U>(other: ReadonlySetLike<U>) {
    return this.loaded.union(other);
  }
  intersection<U>(other: ReadonlySetLike<U>) {
    return this.loaded.intersection(other);
  }
  difference<U>(other: ReadonlySetLike<U>) {
    return this.loaded.difference(other);
  }
  symmetricDifference<U>(other: ReadonlySetLike<U>) {
    return this.loaded.symmetricDifference(other);
  }
  isSubsetOf(other: ReadonlySetLike<unknown>) {
    return this.loaded.isSubsetOf(other);
  }
  isSupersetOf(other: ReadonlySetLike<unknown>) {
    return this.loaded.isSupersetOf(other);
  }
  isDisjointFrom(other: ReadonlySetLike<unknown>) {
    return this.loaded.isDisjointFrom(other);
  }
}

/**
 * Adds addresses on a raw connection, inside the caller's transaction: delivery's settle and bounce intake, so
 * the bounce or complaint that proved an address bad and its place on the list commit together.
 */
export class SuppressionWriter {
  private insert: Statement;

  constructor(sqlite: Database) {
    // a complaint outranks whatever listed the address before, as it may not be removed by the user
    this.insert = sqlite.query(
      `INSERT INTO suppressions (user_id, address, reason, created_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id, address) DO UPDATE SET reason = excluded.reason
       WHERE excluded.reason = 'complaint' AND reason <> 'complaint'`,
    );
  }

  /**
   * Lists `address` on `owner`'s list (null: the ownerless one). True when the list changed: the address was
   * new to it, or a complaint took the place of a weaker reason.
   */
  add(owner: SuppressionOwner, address: string, reason: SuppressionReason, now: number): boolean {
    return this.insert.run(ownerColumn(owner), addressKey(address), reason, now).changes > 0;
  }
}
