/**
 * @module db/migrations — the SQL migrations, embedded in the binary by import.
 * After `drizzle-kit generate`, add the new file here; a test fails when the journal names one that is missing.
 */
import journal from "../../migrations/meta/_journal.json";
import m0000 from "../../migrations/0000_init.sql" with { type: "text" };
import m0001 from "../../migrations/0001_claim_fairness.sql" with { type: "text" };
import m0002 from "../../migrations/0002_delay_warning.sql" with { type: "text" };
import m0003 from "../../migrations/0003_claim_past_backlog.sql" with { type: "text" };
import m0004 from "../../migrations/0004_suppression_owner.sql" with { type: "text" };
import m0005 from "../../migrations/0005_queue_hold.sql" with { type: "text" };
import m0006 from "../../migrations/0006_inbound_mail.sql" with { type: "text" };
import m0007 from "../../migrations/0007_unsubscribe_option.sql" with { type: "text" };
import m0008 from "../../migrations/0008_domain_verdicts.sql" with { type: "text" };
import m0009 from "../../migrations/0009_message_id_header.sql" with { type: "text" };
import m0010 from "../../migrations/0010_webhook_hooks.sql" with { type: "text" };
import m0011 from "../../migrations/0011_queue_oldest.sql" with { type: "text" };
import m0012 from "../../migrations/0012_message_labels.sql" with { type: "text" };
import m0013 from "../../migrations/0013_body_files.sql" with { type: "text" };
import m0014 from "../../migrations/0014_fewer_indexes.sql" with { type: "text" };

export interface Migration {
  tag: string;
  sql: string;
}

const FILES: Record<string, string> = {
  "0000_init": m0000,
  "0001_claim_fairness": m0001,
  "0002_delay_warning": m0002,
  "0003_claim_past_backlog": m0003,
  "0004_suppression_owner": m0004,
  "0005_queue_hold": m0005,
  "0006_inbound_mail": m0006,
  "0007_unsubscribe_option": m0007,
  "0008_domain_verdicts": m0008,
  "0009_message_id_header": m0009,
  "0010_webhook_hooks": m0010,
  "0011_queue_oldest": m0011,
  "0012_message_labels": m0012,
  "0013_body_files": m0013,
  "0014_fewer_indexes": m0014,
};

export const JOURNAL_TAGS: string[] = journal.entries.map((e) => e.tag);

export function embeddedMigrations(): Migration[] {
  return JOURNAL_TAGS.map((tag) => {
    const sql = FILES[tag];
    if (sql === undefined) throw new Error(`migration ${tag} is in the journal but not embedded in src/db/migrations.ts`);
    return { tag, sql };
  });
}
