/** @module auth/users — users who may submit mail: create, list, remove, change password, check credentials. */
import { count, eq } from "drizzle-orm";
import { domainToASCII } from "node:url";
import type { Db } from "../db/client.ts";
import type { UserId } from "../mail/ids.ts";
import { users } from "./schema.ts";

export interface User {
  id: UserId;
  name: string;
  /**
   * the domains this user may send from, in the envelope sender and the From/Sender fields: "example.com", or
   * "*.example.com" for its subdomains (not itself); lower-case A-labels. Empty = any.
   */
  domains: string[];
  createdAt: number;
}

export class UserExistsError extends Error {}
export class UserNotFoundError extends Error {}
export class BadDomainError extends Error {}

const NAME_RE = /^[A-Za-z0-9._@+-]{1,64}$/;

export function isValidUserName(name: string): boolean {
  return NAME_RE.test(name);
}

/** "Example.COM" → "example.com", "*.Bücher.example" → "*.xn--bcher-kva.example"; throws BadDomainError otherwise. */
export function parseSenderDomain(text: string): string {
  const wildcard = text.startsWith("*.");
  const ascii = domainToASCII(wildcard ? text.slice(2) : text);
  if (!/^(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))+$/.test(ascii) || ascii.length > 253) {
    throw new BadDomainError(`invalid sender domain ${JSON.stringify(text)} (expected "example.com" or "*.example.com")`);
  }
  return wildcard ? `*.${ascii}` : ascii;
}

/** 24 URL-safe random characters (~143 bits): what `user add` prints when no password is given. */
export function generatePassword(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString("base64url");
}

function toUser(row: typeof users.$inferSelect): User {
  return { id: row.id as UserId, name: row.name, domains: JSON.parse(row.domains) as string[], createdAt: row.createdAt };
}

export async function addUser(db: Db, name: string, password: string, domains: string[] = []): Promise<User> {
  if (findUser(db, name)) throw new UserExistsError(`user ${name} already exists`);
  const passwordHash = await Bun.password.hash(password, { algorithm: "argon2id" });
  const row = db
    .insert(users)
    .values({ name, passwordHash, domains: JSON.stringify(unique(domains.map(parseSenderDomain))), createdAt: Date.now() })
    .returning()
    .get();
  return toUser(row);
}

export function findUser(db: Db, name: string): User | null {
  const row = db.select().from(users).where(eq(users.name, name)).get();
  return row ? toUser(row) : null;
}

export function getUser(db: Db, id: UserId): User | null {
  const row = db.select().from(users).where(eq(users.id, id)).get();
  return row ? toUser(row) : null;
}

/**
 * Users' names by id, for the mail log: every line names its user, and a delivery line knows only the message's
 * user id. Remembered for `cacheMs` (default a minute), so a busy queue does not read the users table per
 * line; a renamed user shows under the new name within that time.
 */
export class UserNames {
  private cache = new Map<number, { name: string | null; until: number }>();

  constructor(
    private db: Db,
    private cacheMs = 60_000,
    private now: () => number = Date.now,
  ) {}

  /** The user's name; null for no user (trusted-network and system mail) or one since removed. */
  nameOf(id: UserId | null): string | null {
    if (id === null) return null;
    const now = this.now();
    const hit = this.cache.get(id);
    if (hit && hit.until > now) return hit.name;
    const name = getUser(this.db, id)?.name ?? null;
    if (this.cache.size > 10_000) this.cache.clear(); // bounded; users are few
    this.cache.set(id, { name, until: now + this.cacheMs });
    return name;
  }
}

export function listUsers(db: Db): User[] {
  return db.select().from(users).orderBy(users.name).all().map(toUser);
}

export function countUsers(db: Db): number {
  return db.select({ n: count() }).from(users).get()?.n ?? 0;
}

export function removeUser(db: Db, name: string): void {
  const res = db.delete(users).where(eq(users.name, name)).returning({ id: users.id }).all();
  if (res.length === 0) throw new UserNotFoundError(`no user ${name}`);
}

/** Adds and removes sender domains (parsed as parseSenderDomain does) and returns the user as changed. */
export function changeDomains(db: Db, name: string, add: readonly string[], remove: readonly string[]): User {
  const user = findUser(db, name);
  if (!user) throw new UserNotFoundError(`no user ${name}`);
  const gone = new Set(remove.map(parseSenderDomain));
  const domains = unique([...user.domains, ...add.map(parseSenderDomain)]).filter((d) => !gone.has(d));
  db.update(users).set({ domains: JSON.stringify(domains) }).where(eq(users.id, user.id)).run();
  return { ...user, domains };
}

function unique(list: readonly string[]): string[] {
  return [...new Set(list)];
}

export async function setPassword(db: Db, name: string, password: string): Promise<void> {
  const passwordHash = await Bun.password.hash(password, { algorithm: "argon2id" });
  const res = db.update(users).set({ passwordHash }).where(eq(users.name, name)).returning({ id: users.id }).all();
  if (res.length === 0) throw new UserNotFoundError(`no user ${name}`);
}

/**
 * Checks a name/password pair. A smart host opens many connections with the same credentials,
 * and argon2id costs tens of ms each, so successes are cached briefly. `user remove`/`passwd`
 * run in another process and cannot clear this cache, so every check still reads the user row
 * (an indexed read) and trusts a cached success only for the stored hash it was verified against:
 * a removed user or a changed password takes effect at once, and domains always come from the row.
 */
export class CredentialChecker {
  /** key: sha256(name, password, stored hash) → when the success expires */
  private cache = new Map<string, number>();
  constructor(
    private db: Db,
    private ttlMs = 5 * 60_000,
    private now = () => Date.now(),
    private maxEntries = 10_000,
  ) {}

  async check(name: string, password: string): Promise<User | null> {
    const row = this.db.select().from(users).where(eq(users.name, name)).get();
    const key = row ? cacheKey(name, password, row.passwordHash) : null;
    if (row && key && this.isCached(key)) return toUser(row);
    // verify against a dummy hash when the user is unknown, so timing does not reveal which names exist
    const ok = await Bun.password.verify(password, row?.passwordHash ?? (await dummyHash()));
    if (!row || !key || !ok) return null;
    this.remember(key);
    return toUser(row);
  }

  /** The user when this name and password are a cached success (no slow hash), else null. */
  cached(name: string, password: string): User | null {
    const row = this.db.select().from(users).where(eq(users.name, name)).get();
    return row && this.isCached(cacheKey(name, password, row.passwordHash)) ? toUser(row) : null;
  }

  private isCached(key: string): boolean {
    return (this.cache.get(key) ?? 0) > this.now();
  }

  /** Drop cached successes. */
  clear(): void {
    this.cache.clear();
  }

  private remember(key: string): void {
    // entries for old hashes are never hit again; sweep expired ones so the map stays bounded
    if (this.cache.size >= this.maxEntries) {
      const now = this.now();
      for (const [k, until] of this.cache) if (until <= now) this.cache.delete(k);
      if (this.cache.size >= this.maxEntries) this.cache.clear();
    }
    this.cache.set(key, this.now() + this.ttlMs);
  }
}

function cacheKey(name: string, password: string, storedHash: string): string {
  return new Bun.CryptoHasher("sha256").update(name).update("\0").update(password).update("\0").update(storedHash).digest("hex");
}

let dummy: Promise<string> | undefined;
/** Made on first need: hashing costs ~250 ms, which every CLI start would otherwise pay. */
function dummyHash(): Promise<string> {
  return (dummy ??= Bun.password.hash("outpost-dummy", { algorithm: "argon2id" }));
}
