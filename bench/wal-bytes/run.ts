/**
 * bench/wal-bytes — bytes written to the database's WAL per message stored: the durable write's cost, which the
 * number of B-trees a submission touches decides more than its size (each commit writes every page it changed).
 * Stores messages through the real Enqueuer (2 KiB API-like message, one recipient, its `queued` event), in group
 * commits of `batch` messages, with checkpoints off, and reads the WAL's growth. Deterministic: no network, no
 * timing; compare trees by running it in each (`cd CHECKOUT && bun bench/wal-bytes/run.ts`).
 *
 *   bun bench/wal-bytes/run.ts [--msgs 5000] [--batches 1,5,20] [--recipients 50]
 *
 * `recipients` is how many distinct addresses the messages go to (spread over the address index like real mail).
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../../src/db/client.ts";
import { EventRecorder } from "../../src/events/record.ts";
import { Enqueuer, type NewMessage } from "../../src/queue/enqueue.ts";
import { numberOption } from "../lib/timing.ts";

const msgs = numberOption("msgs", 5000);
const addresses = numberOption("recipients", 50);
const i = process.argv.indexOf("--batches");
const batches = (i >= 0 ? process.argv[i + 1]! : "1,5,20").split(",").map(Number);

const body = Buffer.from(`Subject: bench\r\nMessage-ID: <bench@example.test>\r\n\r\n${"y".repeat(2000)}\r\n`);
const message = (n: number): NewMessage => ({
  userId: null,
  envelopeFrom: "sender@example.test",
  recipients: [`r${n % addresses}@dest.test`],
  suppressed: new Set(),
  body,
  subject: "bench",
  messageIdHeader: `<${crypto.randomUUID()}@example.test>`,
  source: "api",
  options: { inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false },
});

console.log("| messages per commit | WAL KiB per message | WAL pages per message |\n|---|---|---|");
for (const batch of batches) {
  const dir = mkdtempSync(join(tmpdir(), "outpost-walbytes-"));
  const path = join(dir, "outpost.db");
  const store = openStore(path);
  try {
    store.sqlite.exec("PRAGMA wal_autocheckpoint = 0; PRAGMA wal_checkpoint(TRUNCATE)");
    const pageSize = (store.sqlite.query("PRAGMA page_size").get() as { page_size: number }).page_size;
    const enqueuer = new Enqueuer(store.sqlite, new EventRecorder(store.sqlite));
    const before = statSync(`${path}-wal`).size;
    for (let n = 0; n < msgs; n += batch) await Promise.all(Array.from({ length: batch }, (_, k) => enqueuer.enqueue(message(n + k))));
    const perMsg = (statSync(`${path}-wal`).size - before) / msgs;
    // a WAL frame is a 24-byte header and one page
    console.log(`| ${batch} | ${(perMsg / 1024).toFixed(1)} | ${(perMsg / (pageSize + 24)).toFixed(2)} |`);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
