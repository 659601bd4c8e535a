/** @module auth/schema — tables for users and their API keys (owned by auth/). */
import { sqliteTable, integer, text, index } from "drizzle-orm/sqlite-core";

export const users = sqliteTable("users", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  name: text("name").notNull().unique(),
  /** argon2id via Bun.password */
  passwordHash: text("password_hash").notNull(),
  /** JSON array of the sender domains (envelope sender, From, Sender; "*.d" for subdomains), A-labels; empty = any */
  domains: text("domains").notNull().default("[]"),
  createdAt: integer("created_at").notNull(),
});

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    userId: integer("user_id").notNull().references(() => users.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    /** SHA-256 hex of the key: keys are long random strings, so a fast hash is safe and lets us look them up */
    keyHash: text("key_hash").notNull().unique(),
    /** first characters, so an operator can recognise a key in `key list` */
    prefix: text("prefix").notNull(),
    createdAt: integer("created_at").notNull(),
    revokedAt: integer("revoked_at"),
  },
  (t) => [index("api_keys_user").on(t.userId)],
);

/**
 * The last domain check of each sender domain (spf/check.ts), for `spf.require_verified_domains`: a domain is
 * verified while its last definite check (pass or fail, not a DNS failure) passed.
 */
export const domainVerdicts = sqliteTable("domain_verdicts", {
  /** lower-case A-labels */
  domain: text("domain").primaryKey(),
  /** "pass" | "fail" | "temperror" */
  lastResult: text("last_result").notNull(),
  checkedAt: integer("checked_at").notNull(),
  /** when a check last passed; null: never */
  passedAt: integer("passed_at"),
  verified: integer("verified", { mode: "boolean" }).notNull(),
  /** the first problem the last failing check found, quoted when mail is refused */
  summary: text("summary").notNull().default(""),
});
