/**
 * Seeds an outpost database with a backlog, straight into SQLite (batched INSERTs in transactions of 50,000 rows,
 * into the schema openStore() migrates to): messages of 100 recipients each (2 KiB bodies), 90 % of the recipients
 * for ten dead domains (d0…d9.dead.test, routed to a closed port) and 10 % for two throttled ones (t0, t1.slow.test,
 * 1 message a minute). Half are `queued` and due now (never tried); half `deferred` (attempts 1–5), a fifth of
 * those due now and the rest spread over the next 8 hours.
 *
 *   bun bench/backlog/seed.ts backlog DB N [later]  # N recipients (default 1,000,000); later: none due for 8 h
 *   bun bench/backlog/seed.ts healthy DB START_MS   # the healthy probes of one run (below)
 *
 * `healthy` adds, for the run about to start at START_MS: first@probe.test, queued and due at once (time to the
 * first delivery), and retry0…retry9@probe.test, deferred and due at START_MS + 10 s, + 12 s, … + 28 s (how long
 * a due retry for a healthy destination waits while the relay benchmark runs).
 */
import { openStore } from "../../src/db/client.ts";
import { newMessageId, newRecipientId } from "../../src/mail/ids.ts";

const [mode, path, arg] = process.argv.slice(2);
if (!path || (mode !== "backlog" && mode !== "healthy")) {
  console.error("usage: seed.ts backlog DB [N] | seed.ts healthy DB START_MS");
  process.exit(2);
}
const store = openStore(path);
const db = store.sqlite;
const now = Date.now();
const BODY = Buffer.from(`From: bench@example.org\r\nSubject: backlog\r\n\r\n${"x".repeat(2_000)}\r\n`);
const insertMessage = db.prepare(
  `INSERT INTO messages (id, created_at, envelope_from, subject, size, body, source) VALUES (?, ?, 'bench@example.org', 'backlog', ?, ?, 'smtp')`,
);
const insertRecipient = db.prepare(
  `INSERT INTO recipients (id, message_id, address, address_key, domain, status, attempts, next_attempt_at, updated_at)
   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
);

function recipient(messageId: string, address: string, status: "queued" | "deferred", attempts: number, due: number): void {
  const domain = address.slice(address.indexOf("@") + 1);
  insertRecipient.run(newRecipientId(), messageId, address, address, domain, status, attempts, due, now);
}

if (mode === "backlog") {
  const total = Number(arg ?? 1_000_000);
  const PER_MESSAGE = 100;
  const BATCH = 50_000;
  for (let done = 0; done < total; ) {
    db.transaction(() => {
      for (let end = Math.min(total, done + BATCH); done < end; ) {
        const id = newMessageId(now - 3_600_000 + done);
        insertMessage.run(id, now - 3_600_000, BODY.length, BODY);
        for (let j = 0; j < PER_MESSAGE && done < end; j++, done++) {
          const domain = done % 10 === 9 ? `t${Math.floor(done / 10) % 2}.slow.test` : `d${done % 10}.dead.test`;
          const address = `u${done}@${domain}`;
          if (done % 2 === 0) recipient(id, address, "queued", 0, now - 3_600_000 + (done % 3_600_000));
          else if (done % 10 < 2) recipient(id, address, "deferred", 1 + (done % 5), now - (done % 600_000));
          else recipient(id, address, "deferred", 1 + (done % 5), now + (done % (8 * 3_600_000)));
        }
      }
    }).immediate();
  }
  // `backlog DB N later`: the same rows, none due for 8 hours (what the size of the tables alone costs)
  if (process.argv[5] === "later") db.run("UPDATE recipients SET next_attempt_at = next_attempt_at + 8 * 3600000 WHERE next_attempt_at <= ?", [now]);
  db.run("ANALYZE");
  console.log(JSON.stringify({ seeded: total, ms: Date.now() - now }));
} else {
  const start = Number(arg);
  const id = newMessageId();
  insertMessage.run(id, now, BODY.length, BODY);
  recipient(id, "first@probe.test", "queued", 0, now);
  for (let k = 0; k < 10; k++) recipient(id, `retry${k}@probe.test`, "deferred", 1, start + 10_000 + 2_000 * k);
}
store.close();
