/**
 * @module queue/bodies — large message bodies, kept in append-only files beside the database (`DB-bodies/`)
 * instead of in the `messages` row: one write of the body, off the JavaScript thread, where SQLite wrote it into
 * its WAL page by page (two writes a page) and copied it into the database again at every checkpoint.
 *
 * Durability: a body is written and synced *before* the row that names it is committed. Any sync of the WAL (ours
 * before a 250, SQLite's own at a checkpoint or a FULL commit) can make a committed row durable, so a row must never
 * be committed while its body could still be lost. A file is created and its directory synced before it is listed
 * in `body_files`; a row names only listed files. Files are written only by `serve` and never changed after. Serve
 * seals and closes a file once it writes no more to it and every row naming it has been committed (or refused); a
 * sealed file that no message names any more is removed: by the process that deleted its last message (`queue
 * delete`), or by serve as it seals it. What a crash can leave behind (bytes no row names, a file not listed) is
 * removed at the next start, when every file of the earlier run is sealed.
 */
import type { Database, Statement } from "bun:sqlite";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readSync, unlinkSync, write } from "node:fs";
import { dirname, join } from "node:path";
import { fdatasyncOffThread, onStoreClose, StoreOpenError, SyncGroup, type SyncFile } from "../db/client.ts";

/** Bodies this long or longer go to a body file; shorter ones stay in the row (a few pages: no gain, one more sync). */
export const BODY_FILE_MIN_BYTES = 16 * 1024;

/** A body file is not grown past this (unless one body is larger): the unit in which deleted messages' space returns. */
export const MAX_FILE_BYTES = 256 * 1024 * 1024;

/** Writes all of `bytes` at `offset` of the open file `fd`; resolves once written (to the page cache). */
export type WriteFile = (fd: number, bytes: Buffer, offset: number) => Promise<void>;

/**
 * pwrite(2) from Bun's thread pool, all of it. Off the JavaScript thread because a write that grows a file can
 * wait for the filesystem's journal while a sync of that file (or another) commits it: milliseconds, during
 * which the thread would answer no client.
 */
export const writeOffThread: WriteFile = (fd, bytes, offset) =>
  new Promise((resolve, reject) => {
    const rest = (done: number): void =>
      write(fd, bytes, done, bytes.length - done, offset + done, (e, n) => {
        if (e) reject(e);
        else if (done + n < bytes.length) rest(done + n);
        else resolve();
      });
    rest(0);
  });

export interface BodyFileOptions {
  /** how a body file is synced (tests hold or fail it) */
  syncFile?: SyncFile;
  /** how a body is written (tests hold or fail it) */
  writeFile?: WriteFile;
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

/** A body file this process writes to; its descriptor stays open while anything may still write or sync it. */
interface Appending {
  id: number;
  fd: number;
  end: number;
  /** its writes started and not returned yet */
  writing: number;
  /** syncs running that include it */
  syncing: number;
  /** bodies placed in it whose rows are neither committed nor refused yet */
  uncommitted: number;
}

export class BodyFiles {
  /** the file being appended to, once one is open */
  private current: Appending | null = null;
  /** the files with a write descriptor open, by number */
  private appending = new Map<number, Appending>();
  /** files with bytes written and not yet synced */
  private dirty = new Set<Appending>();
  /** appends whose write has not returned yet: `synced` waits for them before its sync starts */
  private writes: Array<Promise<void>> = [];
  private closed = false;
  private readFds = new Map<number, number>();
  /** the number of the next file to open; set by `check`, which only serve runs: no one else writes */
  private nextId: number | null = null;
  private syncs = new SyncGroup(() => this.syncDirty());
  private list: Statement<{ id: number }, []>;
  private isSealed: Statement<{ one: number }, [number]>;
  private seal: Statement<unknown, [number]>;
  private sealAll: Statement<unknown, []>;
  private named: Statement<{ one: number }, [number]>;
  private unlist: Statement<unknown, [number]>;
  private addListing: Statement<unknown, [number, number]>;

  private syncFile: SyncFile;
  private writeFile: WriteFile;
  private maxFileBytes: number;

  constructor(
    sqlite: Database,
    readonly dir: string,
    opts: BodyFileOptions = {},
  ) {
    this.syncFile = opts.syncFile ?? fdatasyncOffThread;
    this.writeFile = opts.writeFile ?? writeOffThread;
    this.maxFileBytes = opts.maxFileBytes ?? MAX_FILE_BYTES;
    this.list = sqlite.query("SELECT id FROM body_files ORDER BY id");
    this.isSealed = sqlite.query("SELECT 1 AS one FROM body_files WHERE id = ? AND sealed");
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

  /**
   * Places `body` at the end of the current file (a new one when there is none or it is full) and starts writing
   * it; `synced` waits for the write. `body` must not change until then.
   */
  append(body: Buffer): BodyPlace {
    if (this.closed) throw new Error("the store is closed: no body can be written");
    const cur = this.current;
    const file = cur && !(cur.end > 0 && cur.end + body.length > this.maxFileBytes) ? cur : this.openNext();
    const offset = file.end;
    file.end += body.length;
    file.uncommitted++;
    file.writing++;
    const written = this.writeFile(file.fd, body, offset).then(
      // dirty once written, so that a sync starting after the write returned covers it
      () => void this.dirty.add(file),
      (e: unknown) => {
        // a file with a failed write gets no more: what the failure left in it is not known
        if (this.current === file) this.current = null;
        throw e;
      },
    );
    const returned = () => {
      file.writing--;
      this.release(file);
    };
    written.then(returned, returned);
    this.writes.push(written);
    return { file: file.id, offset };
  }

  /** The rows naming `places` (appended by this process) are committed, or will never be: their files may be sealed. */
  settled(places: Iterable<BodyPlace | undefined>): void {
    for (const p of places) {
      const file = p && this.appending.get(p.file);
      if (!file) continue;
      file.uncommitted--;
      this.release(file);
    }
  }

  /**
   * Resolves once every body appended before the call is on disk; rejects if that cannot be shown. Calls made
   * while a sync runs share the next one. After a failed sync the file is not appended to again: Linux may have
   * dropped the unwritten pages and report the next sync clean.
   */
  synced(): Promise<void> {
    return Promise.all(this.writes.splice(0)).then(() => this.syncs.join());
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
   * After messages were deleted, removes those of `files` (the body files they named) that are sealed and that no
   * message names any more: not one serve may still write to, or that a batch of rows waiting for its body sync
   * will name. One serve seals later is removed then, if no message names it by that time (`release`).
   */
  reclaim(files: Iterable<number>): void {
    this.removeUnnamed([...new Set(files)].filter((id) => this.isSealed.get(id)));
  }

  /**
   * Serve's start, before it writes: refuses a store whose messages name a body file that is gone (their bodies
   * are lost: exit 1, saying so), and removes what a crash or an earlier run left: files not listed, listed files
   * no message names. Every listed file is an earlier run's then, none being written.
   */
  check(): void {
    const listed = new Set(this.list.all().map((r) => r.id));
    const onDisk = new Set(existsSync(this.dir) ? readdirSync(this.dir).flatMap((n) => NAME.exec(n)?.[1] ?? []).map(Number) : []);
    for (const id of onDisk) if (!listed.has(id)) rmIfThere(join(this.dir, fileName(id)));
    for (const id of listed) {
      if (onDisk.has(id)) continue;
      if (this.named.get(id)) {
        throw new StoreOpenError(
          `the body file ${join(this.dir, fileName(id))} is missing, and messages in the database name it: their ` +
            `bodies are lost. Restore ${this.dir} from the backup the database came from`,
        );
      }
      this.unlist.run(id);
    }
    this.sealAll.run();
    this.removeUnnamed([...listed].filter((id) => onDisk.has(id)));
    // numbers are not used twice in a run: a reader's open file is never another file under the same name
    this.nextId = Math.max(0, ...listed, ...onDisk) + 1;
  }

  /** A file is unlisted first, then removed: a crash between leaves a file no one lists (removed at start). */
  private removeUnnamed(ids: number[]): void {
    for (const id of ids) {
      if (this.named.get(id)) continue;
      this.unlist.run(id);
      this.closeReadFd(id);
      rmIfThere(join(this.dir, fileName(id)));
    }
  }

  /** Closes the files; one still being written or synced is closed once that returns (its number could be reused meanwhile). */
  close(): void {
    this.closed = true;
    for (const fd of this.readFds.values()) closeSync(fd);
    this.readFds.clear();
    this.current = null;
    for (const file of this.appending.values()) this.release(file);
  }

  /** A new file, its directory entry on disk, then listed: a row may name it from then on. */
  private openNext(): Appending {
    if (this.nextId === null) throw new Error("body files are written by serve only, after BodyFiles.check");
    const id = this.nextId++;
    // a synced file is found after a crash only if its directory entry is on disk too (fsync(2)): and the
    // directory's own entry, when it is new
    if (!existsSync(this.dir)) {
      mkdirSync(this.dir, { mode: 0o700 });
      syncDir(dirname(this.dir));
    }
    const fd = openSync(join(this.dir, fileName(id)), "wx+", 0o600);
    const file: Appending = { id, fd, end: 0, writing: 0, syncing: 0, uncommitted: 0 };
    this.appending.set(id, file);
    syncDir(this.dir);
    this.addListing.run(id, Date.now());
    const before = this.current;
    this.current = file;
    if (before) this.release(before);
    return file;
  }

  /**
   * A file no longer appended to, once nothing of it is left in flight (no write or sync running, no row waiting to
   * be committed): its descriptor closed, so that removing it frees its space, and sealed, so that it may be
   * removed once no message names it — at once if none does now (its messages deleted already, or its batches
   * refused). After `close` the store is gone: the next start seals it.
   */
  private release(file: Appending): void {
    if (this.current === file || file.writing > 0 || file.syncing > 0 || file.uncommitted > 0) return;
    if (!this.appending.delete(file.id)) return;
    this.dirty.delete(file);
    closeSync(file.fd);
    if (this.closed) return;
    this.seal.run(file.id);
    this.removeUnnamed([file.id]);
  }

  /** Syncs the files written since the last sync started; a file whose sync failed is not appended to again. */
  private async syncDirty(): Promise<void> {
    const files = [...this.dirty];
    this.dirty.clear();
    for (const f of files) f.syncing++;
    try {
      await Promise.all(files.map((f) => this.syncFile(f.fd)));
    } catch (e) {
      // sealed once the batches waiting on it are refused (settled)
      if (this.current && files.includes(this.current)) this.current = null;
      throw e;
    } finally {
      for (const f of files) {
        f.syncing--;
        this.release(f);
      }
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
