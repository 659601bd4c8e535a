/**
 * @module runtime/lock — one `serve` per database: an flock(2) on DATABASE.lock, which the kernel drops when the
 * process ends in any way (kill -9 included), so a crash never leaves a stale lock behind. The file holds the
 * holder's pid, for the message a second `serve` exits with. Other commands (queue, user, key) do not take it.
 */
import { dlopen, FFIType, read } from "bun:ffi";
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { constants as os } from "node:os";

/** <sys/file.h>, the same on Linux and the BSDs (macOS) */
const LOCK_EX = 2;
const LOCK_NB = 4;

/** Another process holds the lock: exit 1 with this message. */
export class LockHeldError extends Error {}

export interface ServeLock {
  path: string;
  release(): void;
}

/** Takes the lock at `path` without waiting, or throws LockHeldError naming the process that holds it. */
export function lockServe(path: string): ServeLock {
  const libc = libcLocks();
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  if (libc.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const errno = libc.errno();
    closeSync(fd);
    if (errno !== os.errno.EWOULDBLOCK) throw new Error(`cannot lock ${path}: flock failed with errno ${errno}`);
    const pid = readFileSync(path, "utf8").trim();
    throw new LockHeldError(
      `another outpost serve${pid ? ` (pid ${pid})` : ""} is running on this database: it holds ${path}. Stop it first; commands such as \`outpost queue\` work beside it`,
    );
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return { path, release: () => closeSync(fd) };
}

interface LibcLocks {
  flock(fd: number, op: number): number;
  errno(): number;
}

let libc: LibcLocks | undefined;

/** flock and errno from the C library (Node's fs has no flock); glibc and musl answer to "libc.so.6". */
function libcLocks(): LibcLocks {
  if (libc) return libc;
  const darwin = process.platform === "darwin";
  const errnoSymbol = darwin ? "__error" : "__errno_location";
  const lib = dlopen(darwin ? "libc.dylib" : "libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    [errnoSymbol]: { args: [], returns: FFIType.ptr },
  });
  const errnoAt = lib.symbols[errnoSymbol]!;
  libc = {
    flock: (fd, op) => lib.symbols.flock!(fd, op) as number,
    errno: () => {
      const at = errnoAt();
      return at === null ? 0 : read.i32(at, 0);
    },
  };
  return libc;
}
