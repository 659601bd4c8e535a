/** @module observe/log — one JSON line per event to stdout, filtered by level. */
import { writeSync } from "node:fs";
import type { LogLevel } from "../config/schema.ts";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
}

function isLevel(v: string | undefined): v is LogLevel {
  return v !== undefined && v in ORDER;
}

/** Lines not yet on stdout: the lines of one turn of the event loop go out in one write (see stdoutLine). */
let pending = "";
/** Past this many characters the lines go out at once, whatever the turn. */
const FLUSH_AT = 64 * 1024;

function flushLines(): void {
  if (pending === "") return;
  const text = pending;
  pending = "";
  writeAll(Buffer.from(text));
}

/** One wait of ~1 ms while a full pipe drains (a non-blocking stdout answers EAGAIN). */
const pause = (() => {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  return () => Atomics.wait(cell, 0, 0, 1);
})();

/**
 * Writes all of `bytes` to stdout before returning. process.stdout.write may leave the rest of a large write queued
 * when the pipe is full, and a process that exits then loses it (a line cut in two): the lines written just before
 * an exit are the ones that say why. If stdout is gone (EPIPE), there is nowhere to log to: the lines are dropped.
 */
function writeAll(bytes: Buffer): void {
  for (let at = 0; at < bytes.length; ) {
    try {
      at += writeSync(1, bytes, at);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return;
      pause();
    }
  }
}

// whatever way the process ends (process.exit, an uncaught error), its last lines are written first
process.on("exit", flushLines);

/**
 * Writes a line to stdout at the end of this turn of the event loop, together with the lines every logger writes
 * in the same turn, in order: a relay writes a few lines per message, and one system call per line was a
 * measurable share of its CPU per message (bench/relay/RESULTS.md).
 */
function stdoutLine(line: string): void {
  if (pending === "") setImmediate(flushLines);
  pending += line + "\n";
  if (pending.length >= FLUSH_AT) flushLines();
}

/** Level from the argument, else OUTPOST_LOG, else info. `write` is replaceable for tests. */
export function createLogger(level?: LogLevel, write: (line: string) => void = stdoutLine): Logger {
  const env = process.env.OUTPOST_LOG;
  const min = ORDER[level ?? (isLevel(env) ? env : "info")];
  const emit = (lvl: LogLevel) => (event: string, fields: LogFields = {}) => {
    if (ORDER[lvl] < min) return;
    const line = { time: new Date().toISOString(), level: lvl, event, ...fields };
    // a replacer costs a call per value: ~6× the time of the whole line without one
    write(needsReplacer(fields) ? JSON.stringify(line, errorReplacer) : JSON.stringify(line));
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

const isPrimitive = (v: unknown): boolean => v === null || (typeof v !== "object" && typeof v !== "bigint");

/**
 * Could errorReplacer change how these fields are written? Yes for a bigint, and for any object but an array of
 * primitives (an Error may be inside; such fields are not searched further, they just take the replacer).
 */
function needsReplacer(fields: LogFields): boolean {
  for (const key in fields) {
    const value = fields[key];
    if (!isPrimitive(value) && !(Array.isArray(value) && value.every(isPrimitive))) return true;
  }
  return false;
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** Logs nothing: for tests and for CLI commands that print to people. */
export const silentLogger: Logger = createLogger("error", () => {});
