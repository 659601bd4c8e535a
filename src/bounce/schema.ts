/** @module bounce/schema — mail kept at the bounce domain for people to read (owned by bounce/). */
import { sqliteTable, integer, text, blob, index } from "drizzle-orm/sqlite-core";

/**
 * Mail that arrived at the bounce domain and is kept: to postmaster@/abuse@, or a report that could not be
 * parsed or matched to a recipient. Bounces that were understood are not kept (their event is the record).
 */
export const inboundMail = sqliteTable(
  "inbound_mail",
  {
    /** mail/ids.ts InboundId, also in the SMTP reply and the log line */
    id: text("id").primaryKey(),
    receivedAt: integer("received_at").notNull(),
    /** "postmaster" | "abuse" | "unparsed" | "unmatched" | "failed" */
    kind: text("kind").notNull(),
    /** the bounce-domain recipients of the transaction, comma-separated */
    rcpt: text("rcpt").notNull(),
    /** MAIL FROM; "" is the null sender */
    mailFrom: text("mail_from").notNull(),
    clientIp: text("client_ip").notNull(),
    size: integer("size").notNull(),
    /** why it was kept, for people */
    reason: text("reason").notNull(),
    raw: blob("raw", { mode: "buffer" }).notNull(),
  },
  (t) => [index("inbound_mail_received").on(t.receivedAt)],
);
