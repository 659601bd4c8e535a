/** @module suppression/schema — the suppression list (owned by suppression/). */
import { sqliteTable, integer, text } from "drizzle-orm/sqlite-core";

export const suppressions = sqliteTable("suppressions", {
  /** lower-cased address */
  address: text("address").primaryKey(),
  /** "manual", "hard_bounce", "complaint" */
  reason: text("reason").notNull(),
  createdAt: integer("created_at").notNull(),
});
