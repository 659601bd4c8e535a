/** @module auth/keys — API keys: created random, shown once, stored as SHA-256, found by that hash. */
import { and, eq, isNull } from "drizzle-orm";
import type { Db } from "../db/client.ts";
import type { UserId } from "../mail/ids.ts";
import { apiKeys } from "./schema.ts";

export interface ApiKeyInfo {
  id: string;
  userId: UserId;
  name: string;
  prefix: string;
  createdAt: number;
  revokedAt: number | null;
}

export class KeyNotFoundError extends Error {}

/** `op_` + 40 URL-safe characters (240 bits): the prefix lets secret scanners recognise a leaked key. */
export function generateKey(): string {
  return "op_" + Buffer.from(crypto.getRandomValues(new Uint8Array(30))).toString("base64url");
}

export function hashKey(key: string): string {
  return Bun.SHA256.hash(key, "hex");
}

/** Creates a key for a user; returns the secret (print it once; only its hash is kept). */
export function createKey(db: Db, userId: UserId, name: string): { key: string; info: ApiKeyInfo } {
  const key = generateKey();
  const id = "key_" + Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex");
  const row = db
    .insert(apiKeys)
    .values({ id, userId, name, keyHash: hashKey(key), prefix: key.slice(0, 8), createdAt: Date.now() })
    .returning()
    .get();
  return { key, info: toInfo(row) };
}

function toInfo(row: typeof apiKeys.$inferSelect): ApiKeyInfo {
  return {
    id: row.id,
    userId: row.userId as UserId,
    name: row.name,
    prefix: row.prefix,
    createdAt: row.createdAt,
    revokedAt: row.revokedAt,
  };
}

export function listKeys(db: Db): ApiKeyInfo[] {
  return db.select().from(apiKeys).orderBy(apiKeys.createdAt).all().map(toInfo);
}

export function revokeKey(db: Db, id: string): void {
  const res = db
    .update(apiKeys)
    .set({ revokedAt: Date.now() })
    .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .returning({ id: apiKeys.id })
    .all();
  if (res.length === 0) throw new KeyNotFoundError(`no active key ${id}`);
}

/**
 * The user a presented key belongs to, or null. The lookup is by hash (an index equality on a
 * digest of the secret), so no secret-dependent comparison happens in our code.
 */
export function userForKey(db: Db, key: string): UserId | null {
  if (!key.startsWith("op_")) return null;
  const row = db
    .select({ userId: apiKeys.userId })
    .from(apiKeys)
    .where(and(eq(apiKeys.keyHash, hashKey(key)), isNull(apiKeys.revokedAt)))
    .get();
  return row ? (row.userId as UserId) : null;
}
