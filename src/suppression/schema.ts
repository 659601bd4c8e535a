/** @module suppression/schema — the suppression lists, one per user plus the ownerless one (owned by suppression/). */
import { sqliteTable, integer, text, primaryKey } from "drizzle-orm/sqlite-core";

export const suppressions = sqliteTable(
  "suppressions",
  {
    /**
     * The user whose list this is; 0 is the ownerless list (mail from trusted networks and our own DSNs). A number,
     * not NULL, so (user_id, address) stays a real primary key; no foreign key, as user 0 does not exist.
     */
    userId: integer("user_id").notNull().default(0),
    /** the address's comparison key (mail/address.ts addressKey) */
    address: text("address").notNull(),
    /** "manual", "hard_bounce", "complaint", "unsubscribe" */
    reason: text("reason").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.address] })],
);
