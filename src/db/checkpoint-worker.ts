/** @module db/checkpoint-worker — the checkpoint thread (db/checkpoint.ts): copies the WAL into the database file. */
import { Database } from "bun:sqlite";
import type { CheckpointReply, CheckpointRequest } from "./checkpoint.ts";

declare const self: Worker;

let db: Database | null = null;
let timer: ReturnType<typeof setInterval> | undefined;

const reply = (m: CheckpointReply) => self.postMessage(m);

/**
 * PASSIVE: copies the frames no reader still needs, never waits for a lock and never stops the writer, which
 * starts the WAL over at its next commit once everything in it is copied. The database file is synced after.
 */
function checkpoint(): void {
  try {
    db?.query("PRAGMA wal_checkpoint(PASSIVE)").get();
  } catch (e) {
    stop();
    reply({ type: "failed", error: e instanceof Error ? e.message : String(e) });
  }
}

function stop(): void {
  clearInterval(timer);
  db?.close();
  db = null;
}

self.onmessage = (event: MessageEvent<CheckpointRequest>) => {
  const m = event.data;
  if (m.type === "start") {
    try {
      db = new Database(m.path, { readwrite: true, create: false });
      // a checkpoint syncs the WAL before copying it and the database file after, at any level but OFF
      db.exec("PRAGMA synchronous = FULL");
      db.exec("PRAGMA wal_autocheckpoint = 0");
    } catch (e) {
      reply({ type: "failed", error: e instanceof Error ? e.message : String(e) });
      return;
    }
    timer = setInterval(checkpoint, m.intervalMs);
  } else {
    stop();
    reply({ type: "closed" });
  }
};
