/**
 * bench/wal-bytes — bytes written to the database's WAL per message stored: the durable write's cost, which the
 * number of B-trees a submission touches decides more than its size (each commit writes every page it changed).
 * Stores messages through the real Enqueuer (2 KiB API-like message, one recipient, its `queued` event), in group
 * commits of `batch` messages, with checkpoints off, and reads the WAL's growth. Deterministic: no network, no
 * timing; compare trees by running it in each (`cd CHECKOUT && bun bench/wal-bytes/run.ts`).
 *
 *   bun bench/wal-bytes/run.ts [--msgs 5000] [--batches 1,5,20] [--recipients 50] [--by-tree]
 *
 * `recipients` is how many distinct addresses the messages go to (spread over the address index like real mail).
 * `--by-tree` also prints, per batch size, the pages one commit writes to each table and index (the WAL's frames,
 * named through SQLite's dbstat table).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import type { Database } from "bun:sqlite";
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
const byTree = process.argv.includes("--by-tree");

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

const trees: Array<{ batch: number; pages: Map<string, number> }> = [];
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
    if (byTree) trees.push({ batch, pages: pagesByTree(store.sqlite, `${path}-wal`, pageSize, msgs / batch) });
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const { batch, pages } of trees) {
  console.log(`\n| ${batch} per commit: table or index | pages per commit |\n|---|---|`);
  for (const [tree, n] of [...pages].sort((a, b) => b[1] - a[1])) console.log(`| ${tree} | ${n.toFixed(2)} |`);
}

/** The WAL's frames (a 24-byte header naming the page, then the page) by the B-tree their page belongs to, per commit. */
function pagesByTree(sqlite: Database, walPath: string, pageSize: number, commits: number): Map<string, number> {
  const wal = readFileSync(walPath);
  const owner = new Map(sqlite.query<{ name: string; pageno: number }, []>("SELECT name, pageno FROM dbstat").all().map((r) => [r.pageno, r.name]));
  const pages = new Map<string, number>();
  // the WAL header is 32 bytes
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    const tree = owner.get(wal.readUInt32BE(at)) ?? "(free list)";
    pages.set(tree, (pages.get(tree) ?? 0) + 1 / commits);
  }
  return pages;
}
