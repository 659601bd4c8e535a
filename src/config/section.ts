/**
 * @module config/section — typed reads from one parsed TOML table. Every read records its key,
 * so `finish()` can reject whatever was not read, and every failure names the dotted key.
 */
import { resolve } from "node:path";
import { ConfigError } from "./errors.ts";

export type Table = Record<string, unknown>;

/** Where the values come from: the label used in errors and the directory relative paths resolve against. */
export interface Origin {
  label: string;
  baseDir: string;
}

export function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.getPrototypeOf(value) === Object.prototype;
}

/** `a.b`, `a."gmail.com"` (TOML quoting for keys that are not bare), or just `b` at the top. */
export function joinKey(path: string, key: string): string {
  const part = /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
  return path === "" ? part : `${path}.${part}`;
}

export class Section {
  private readonly used = new Set<string>();

  constructor(
    readonly origin: Origin,
    private readonly table: Table,
    readonly path: string,
  ) {}

  keyOf(key: string): string {
    return joinKey(this.path, key);
  }

  fail(key: string, problem: string): never {
    return this.failAt(this.keyOf(key), problem);
  }

  has(key: string): boolean {
    return this.table[key] !== undefined;
  }

  /** The raw value, marking the key as known. */
  raw(key: string): unknown {
    this.used.add(key);
    return this.table[key];
  }

  string(key: string, fallback?: string): string {
    const value = this.raw(key) ?? this.required(key, fallback);
    if (typeof value !== "string") this.fail(key, "expected a string");
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.raw(key) ?? fallback;
    if (typeof value !== "boolean") this.fail(key, "expected a boolean (true or false)");
    return value;
  }

  integer(key: string, fallback: number | undefined, min = 1, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.raw(key) ?? this.required(key, fallback);
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
      this.fail(key, `expected an integer ${range}`);
    }
    return value;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(key) ?? fallback;
    const match = allowed.find((candidate) => candidate === value);
    if (match === undefined) this.fail(key, `expected one of ${allowed.map((v) => JSON.stringify(v)).join(", ")}`);
    return match;
  }

  /** A string run through `parse`; the fallback is in the same textual form, so defaults read like docs/config.md. */
  parsed<T>(key: string, parse: (text: string) => T, fallback?: string): T {
    return this.attempt(key, () => parse(this.string(key, fallback)));
  }

  /** An array of strings, each run through `parse`; errors name the element (`smtp.listen[1]`). */
  list<T>(key: string, parse: (text: string) => T, fallback: readonly string[]): T[] {
    const value = this.raw(key) ?? fallback;
    if (!Array.isArray(value)) this.fail(key, "expected an array of strings");
    return value.map((item: unknown, i) => {
      const itemPath = `${this.keyOf(key)}[${i}]`;
      if (typeof item !== "string") this.failAt(itemPath, "expected a string");
      return this.attemptAt(itemPath, () => parse(item));
    });
  }

  /** A sub-table (absent: empty), read by `read` and then checked for unknown keys. */
  within<T>(key: string, read: (section: Section) => T): T {
    const value = this.raw(key) ?? {};
    if (!isTable(value)) this.fail(key, "expected a table");
    return this.child(value, this.keyOf(key), read);
  }

  /** An array of tables (`[[dkim]]`), each element keyed `dkim[0]`. */
  each<T>(key: string, read: (section: Section) => T): T[] {
    const value = this.raw(key) ?? [];
    if (!Array.isArray(value) || !value.every(isTable)) this.fail(key, `expected an array of tables ([[${this.keyOf(key)}]])`);
    return value.map((item, i) => this.child(item, `${this.keyOf(key)}[${i}]`, read));
  }

  /** A table of tables keyed by name (`[delivery.destination."gmail.com"]`); `parseName` validates each name. */
  named<T>(key: string, parseName: (name: string) => string, read: (section: Section) => T): Record<string, T> {
    return this.within(key, (outer: Section) => {
      const result: Record<string, T> = {};
      for (const [name, value] of Object.entries(outer.table)) {
        const normalized = outer.attempt(name, () => parseName(name));
        if (!isTable(value)) outer.fail(name, "expected a table");
        if (normalized in result) outer.fail(name, `repeats ${JSON.stringify(normalized)} (names ignore case)`);
        result[normalized] = outer.child(value, outer.keyOf(name), read);
        outer.used.add(name);
      }
      return result;
    });
  }

  /** A path, resolved against the config file's directory; "" stays "". */
  filePath(key: string, fallback?: string): string {
    const value = this.string(key, fallback);
    return value === "" ? "" : resolve(this.origin.baseDir, value);
  }

  /** Rejects every key that no read asked for. */
  finish(): void {
    const unknown = Object.keys(this.table).find((key) => !this.used.has(key));
    if (unknown !== undefined) this.fail(unknown, "unknown key");
  }

  /** Runs a value parser, turning its plain Error into a ConfigError for `key`. */
  attempt<T>(key: string, parse: () => T): T {
    return this.attemptAt(this.keyOf(key), parse);
  }

  private attemptAt<T>(path: string, parse: () => T): T {
    try {
      return parse();
    } catch (error) {
      if (error instanceof ConfigError || !(error instanceof Error)) throw error;
      return this.failAt(path, error.message);
    }
  }

  private failAt(path: string, problem: string): never {
    throw new ConfigError(this.origin.label, path, problem);
  }

  private required<T>(key: string, fallback: T | undefined): T {
    if (fallback === undefined) this.fail(key, "missing required key");
    return fallback;
  }

  private child<T>(table: Table, path: string, read: (section: Section) => T): T {
    const section = new Section(this.origin, table, path);
    const result = read(section);
    section.finish();
    return result;
  }
}
