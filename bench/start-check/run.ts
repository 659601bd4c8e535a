/**
 * bench/start-check — what serve's start-up database check costs (db/client.ts verify): SQLite's quick_check on
 * every table but the message bodies (what serve runs) against the whole file, cold (the file's pages dropped
 * from the page cache with posix_fadvise DONTNEED) and warm, on a database of about --mb megabytes.
 *
 *   bun bench/start-check/run.ts [--mb 300] [--body-kb 20] [--recipients 5]
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../../src/db/client.ts";
import { MESSAGE_BODIES_TABLE } from "../../src/queue/enqueue.ts";

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const mb = opt("mb", 300);
const bodyBytes = opt("body-kb", 20) * 1000;
const perMessage = opt("recipients", 5);

const dir = mkdtempSync(join(tmpdir(), "outpost-bench-check-"));
const file = join(dir, "outpost.db");
try {
  fill(file);
  const size = statSync(file).size;
  console.log(`database: ${(size / 1e6).toFixed(0)} MB, ${count("messages")} messages, ${count("recipients")} recipients`);
  for (const [label, skip] of [["serve's check (all but bodies)", [MESSAGE_BODIES_TABLE]], ["whole file", []]] as const) {
    const cold = timed(skip, true);
    const warm = timed(skip, false);
    console.log(`${label}: cold ${cold.toFixed(2)} s, warm ${warm.toFixed(2)} s; per GB: cold ${(cold * 1e9 / size).toFixed(1)} s, warm ${(warm * 1e9 / size).toFixed(1)} s`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

function fill(path: string): void {
  const { sqlite, close } = openStore(path);
  sqlite.exec("PRAGMA synchronous = OFF");
  const body = Buffer.alloc(bodyBytes, 0x61);
  const message = sqlite.prepare(`INSERT INTO messages (id, user_id, created_at, envelope_from, subject, size, body, source,
    inline_css, track_clicks, track_opens, track_bounces, idempotency_key) VALUES (?, NULL, ?, 'a@example.com', 's', ?, ?, 'smtp', 0, 0, 0, 0, NULL)`);
  const recipient = sqlite.prepare(`INSERT INTO recipients (id, message_id, address, domain, status, attempts, next_attempt_at, updated_at)
    VALUES (?, ?, ?, ?, 'delivered', 1, ?, ?)`);
  const n = Math.round((mb * 1e6) / (bodyBytes + 2000));
  for (let start = 0; start < n; start += 1000) {
    sqlite.transaction(() => {
      for (let i = start; i < Math.min(n, start + 1000); i++) {
        const id = `m${String(i).padStart(10, "0")}`;
        message.run(id, i, body.length, body);
        for (let r = 0; r < perMessage; r++) recipient.run(`${id}r${r}`, id, `u${r}@d${i % 500}.example`, `d${i % 500}.example`, i, i);
      }
    })();
  }
  sqlite.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  close();
}

function count(table: string): number {
  const { sqlite, close } = openStore(file);
  const n = (sqlite.query(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  close();
  return n;
}

/** Seconds for openStore with the check; `cold` drops the file from the page cache first (python3's os.posix_fadvise). */
function timed(skip: readonly string[], cold: boolean): number {
  if (cold) {
    const drop = `import os; fd = os.open(${JSON.stringify(file)}, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)`;
    Bun.spawnSync(["python3", "-c", drop]);
  }
  const t0 = performance.now();
  openStore(file, { verify: { skip: [...skip] } }).close();
  return (performance.now() - t0) / 1000;
}
