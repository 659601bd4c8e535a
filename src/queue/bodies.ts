/**
 * @module queue/bodies — large message bodies, kept in append-only files beside the database (`DB-bodies/`)
 * instead of in the `messages` row: one write of the body, where SQLite wrote it into its WAL page by page (two
 * writes a page) and copied it into the database again at every checkpoint.
 *
 * Durability: a body is written and synced *before* the row that names it is committed. Any sync of the WAL (ours
 * before a 250, SQLite's own at a checkpoint or a FULL commit) can make a committed row durable, so a row must never
 * be committed while its body could still be lost. A file is created and its directory synced before it is listed
 * in `body_files`; a row names only listed files. Files are written only by `serve` and never changed after. Serve
 * seals a file once it writes no more to it and every row naming it has been committed (or refused); a sealed file
 * that no message names any more is removed, by any process (`queue delete`). What a crash can leave behind (bytes
 * no row names, a file not listed) is removed at the next start, when every file of the earlier run is sealed.
 */
import type { Database, Statement } from "bun:sqlite";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readSync, unlinkSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { fdatasyncOffThread, onStoreClose, StoreOpenError, SyncGroup, type SyncFile } from "../db/client.ts";

/** Bodies this long or longer go to a body file; shorter ones stay in the row (a few pages: no gain, one more sync). */
export const BODY_FILE_MIN_BYTES = 16 * 1024;

/** A body file is not grown past this (unless one body is larger): the unit in which deleted messages' space returns. */
export const MAX_FILE_BYTES = 256 * 1024 * 1024;

export interface BodyFileOptions {
  /** how a body file is synced (tests hold or fail it) */
  syncFile?: SyncFile;
  maxFileBytes?: number;
}

/** How many body files are kept open for reading at once. */
const READ_FDS = 8;

export interface BodyPlace {
  file: number;
  offset: number;
}

/** A body the store names cannot be read back (its file is gone, or shorter than the row says). */
export class BodyUnreadable extends Error {}

const NAME = /^(\d{8})\.body$/;
const fileName = (id: number) => `${String(id).padStart(8, "0")}.body`;

export class BodyFiles {
  /** the file being appended to by this process, once one is open */
  private current: { id: number; fd: number; end: number } | null = null;
  /** write descriptors with bytes not yet synced; every one ever opened, closed with the store */
  private dirty = new Set<number>();
  private writeFds: number[] = [];
  private readFds = new Map<number, number>();
  /** the number of the next file to open; set by `check`, which only serve runs: no one else writes */
  private nextId: number | null = null;
  private syncs = new SyncGroup(() => this.syncDirty());
  /** per file, bodies appended whose rows are neither committed nor refused yet: the file is not sealed before */
  private uncommitted = new Map<number, number>();
  private list: Statement<{ id: number }, []>;
  private listSealed: Statement<{ id: number }, []>;
  private seal: Statement<unknown, [number]>;
  private sealAll: Statement<unknown, []>;
  private named: Statement<{ one: number }, [number]>;
  private unlist: Statement<unknown, [number]>;
  private addListing: Statement<unknown, [number, number]>;

  private syncFile: SyncFile;
  private maxFileBytes: number;

  constructor(
    sqlite: Database,
    readonly dir: string,
    opts: BodyFileOptions = {},
  ) {
    this.syncFile = opts.syncFile ?? fdatasyncOffThread;
    this.maxFileBytes = opts.maxFileBytes ?? MAX_FILE_BYTES;
    this.list = sqlite.query("SELECT id FROM body_files ORDER BY id");
    this.listSealed = sqlite.query("SELECT id FROM body_files WHERE sealed ORDER BY id");
    this.seal = sqlite.query("UPDATE body_files SET sealed = 1 WHERE id = ?");
    this.sealAll = sqlite.query("UPDATE body_files SET sealed = 1 WHERE NOT sealed");
    this.named = sqlite.query("SELECT 1 AS one FROM messages WHERE body_file = ? LIMIT 1");
    this.unlist = sqlite.query("DELETE FROM body_files WHERE id = ?");
    this.addListing = sqlite.query("INSERT INTO body_files (id, created_at) VALUES (?, ?)");
  }

  /** Whether a body of `length` bytes is written to a body file rather than into its row. */
  takes(length: number): boolean {
    return length >= BODY_FILE_MIN_BYTES;
  }

  /** Writes `body` at the end of the current file (a new one when there is none or it is full). Synchronous. */
  append(body: Buffer): BodyPlace {
    let cur = this.current;
    if (!cur || (cur.end > 0 && cur.end + body.length > this.maxFileBytes)) cur = this.openNext();
    const offset = cur.end;
    for (let done = 0; done < body.length; ) done += writeSync(cur.fd, body, done, body.length - done, offset + done);
    cur.end += body.length;
    this.dirty.add(cur.fd);
    this.uncommitted.set(cur.id, (this.uncommitted.get(cur.id) ?? 0) + 1);
    return { file: cur.id, offset };
  }

  /** The rows naming `places` (appended by this process) are committed, or will never be: their files may be sealed. */
  settled(places: Iterable<BodyPlace | undefined>): void {
    for (const p of places) {
      if (!p) continue;
      const left = (this.uncommitted.get(p.file) ?? 1) - 1;
      if (left > 0) this.uncommitted.set(p.file, left);
      else this.uncommitted.delete(p.file);
      this.sealIfDone(p.file);
    }
  }

  /**
   * Resolves once every body appended before the call is on disk; rejects if that cannot be shown. Calls made
   * while a sync runs share the next one. After a failed sync the file is not appended to again: Linux may have
   * dropped the unwritten pages and report the next sync clean.
   */
  synced(): Promise<void> {
    return this.syncs.join();
  }

  /** The `size` bytes at `offset` of body file `file`. */
  read(file: number, offset: number, size: number): Buffer {
    const fd = this.readFd(file);
    const out = Buffer.allocUnsafe(size);
    for (let got = 0; got < size; ) {
      const n = readSync(fd, out, got, size - got, offset + got);
      if (n === 0) throw new BodyUnreadable(`${join(this.dir, fileName(file))} ends before byte ${offset + size}`);
      got += n;
    }
    return out;
  }

  /**
   * Removes the sealed files no message names: after messages were deleted. Not one serve may still write to, or
   * that a batch of rows waiting for its body sync will name. A file is unlisted first, then removed: a crash
   * between leaves a file no one lists.
   */
  reclaim(): void {
    this.removeUnnamed(this.listSealed.all().map((r) => r.id));
  }

  /**
   * Serve's start, before it writes: refuses a store whose messages name a body file that is gone (their bodies
   * are lost: exit 1, saying so), and removes what a crash or an earlier run left: files not listed, listed files
   * no message names. Every listed file is an earlier run's then, none being written.
   */
  check(): void {
    const listed = new Set(this.list.all().map((r) => r.id));
    const onDisk = existsSync(this.dir) ? readdirSync(this.dir).flatMap((n) => NAME.exec(n)?.[1] ?? []).map(Number) : [];
    for (const id of onDisk) if (!listed.has(id)) rmIfThere(join(this.dir, fileName(id)));
    for (const id of listed) {
      if (onDisk.includes(id)) continue;
      if (this.named.get(id)) {
        throw new StoreOpenError(
          `the body file ${join(this.dir, fileName(id))} is missing, and messages in the database name it: their ` +
            `bodies are lost. Restore ${this.dir} from the backup the database came from`,
        );
      }
      this.unlist.run(id);
    }
    this.sealAll.run();
    this.removeUnnamed([...listed].filter((id) => onDisk.includes(id)));
    // numbers are not used twice in a run: a reader's open file is never another file under the same name
    this.nextId = Math.max(0, ...listed, ...onDisk) + 1;
  }

  private removeUnnamed(ids: number[]): void {
    for (const id of ids) {
      if (this.named.get(id)) continue;
      this.unlist.run(id);
      this.closeReadFd(id);
      rmIfThere(join(this.dir, fileName(id)));
    }
  }

  close(): void {
    for (const fd of [...this.writeFds, ...this.readFds.values()]) closeSync(fd);
    this.writeFds = [];
    this.readFds.clear();
    this.dirty.clear();
    this.current = null;
  }

  /** A new file, its directory entry on disk, then listed: a row may name it from then on. */
  private openNext(): { id: number; fd: number; end: number } {
    if (this.nextId === null) throw new Error("body files are written by serve only, after BodyFiles.check");
    const id = this.nextId++;
    // a synced file is found after a crash only if its directory entry is on disk too (fsync(2)): and the
    // directory's own entry, when it is new
    if (!existsSync(this.dir)) {
      mkdirSync(this.dir, { mode: 0o700 });
      syncDir(dirname(this.dir));
    }
    const fd = openSync(join(this.dir, fileName(id)), "wx+", 0o600);
    this.writeFds.push(fd);
    syncDir(this.dir);
    this.addListing.run(id, Date.now());
    const before = this.current;
    this.current = { id, fd, end: 0 };
    if (before) this.sealIfDone(before.id);
    return this.current;
  }

  private sealIfDone(file: number): void {
    if (this.current?.id !== file && !this.uncommitted.has(file)) this.seal.run(file);
  }

  /** Syncs the files written since the last sync started; a file whose sync failed is not appended to again. */
  private async syncDirty(): Promise<void> {
    const fds = [...this.dirty];
    this.dirty.clear();
    try {
      await Promise.all(fds.map((fd) => this.syncFile(fd)));
    } catch (e) {
      // sealed once the batches waiting on it are refused (settled)
      if (this.current && fds.includes(this.current.fd)) this.current = null;
      throw e;
    }
  }

  private readFd(file: number): number {
    let fd = this.readFds.get(file);
    if (fd !== undefined) {
      this.readFds.delete(file);
      this.readFds.set(file, fd); // most recently used last
      return fd;
    }
    try {
      fd = openSync(join(this.dir, fileName(file)), "r");
    } catch (e) {
      throw new BodyUnreadable(`cannot open the body file ${join(this.dir, fileName(file))}: ${(e as Error).message}`, { cause: e });
    }
    if (this.readFds.size >= READ_FDS) this.closeReadFd(this.readFds.keys().next().value!);
    this.readFds.set(file, fd);
    return fd;
  }

  private closeReadFd(file: number): void {
    const fd = this.readFds.get(file);
    if (fd === undefined) return;
    this.readFds.delete(file);
    closeSync(fd);
  }
}

function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function rmIfThere(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOENT") throw e;
  }
}

const bodyFiles = new WeakMap<Database, BodyFiles>();

/** The body files of the database `sqlite` is a connection to (`DB-bodies/`); null for a database in memory. */
export function bodyFilesOf(sqlite: Database): BodyFiles | null {
  return bodyFiles.get(sqlite) ?? filesFor(sqlite);
}

/** Serve's body files, checked (BodyFiles.check): the only ones written to. */
export function openBodyFiles(sqlite: Database, opts?: BodyFileOptions): BodyFiles | null {
  const files = filesFor(sqlite, opts);
  files?.check();
  return files;
}

function filesFor(sqlite: Database, opts?: BodyFileOptions): BodyFiles | null {
  const path = sqlite.filename;
  if (!path || path === ":memory:") return null;
  const files = new BodyFiles(sqlite, `${path}-bodies`, opts);
  bodyFiles.set(sqlite, files);
  onStoreClose(sqlite, () => files.close());
  return files;
}

/** A `messages` row's body columns, as the queue's reads select them. */
export interface BodyColumns {
  body: Uint8Array;
  size: number;
  body_file: number | null;
  body_offset: number | null;
}

/** The SELECT list for BodyColumns. */
export const BODY_COLUMNS = "body, size, body_file, body_offset";

/** The stored body of a row: from its body file when it names one, else the row's own bytes (not copied). */
export function bodyOf(sqlite: Database, row: BodyColumns): Buffer {
  if (row.body_file === null) return Buffer.from(row.body.buffer, row.body.byteOffset, row.body.byteLength);
  const files = bodyFilesOf(sqlite);
  if (!files) throw new BodyUnreadable(`message body in body file ${row.body_file}, but the database has no body files`);
  return files.read(row.body_file, row.body_offset ?? 0, row.size);
}
