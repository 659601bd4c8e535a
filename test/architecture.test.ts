/**
 * ARCHITECTURE.md §3 "Dependency direction", enforced: imports go downward only, edges never import each other,
 * a module's tables are imported only by that module, and each library has one home.
 */
import { expect, test } from "bun:test";
import { Glob } from "bun";
import { readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = join(import.meta.dir, "../src");

/** Higher may import lower. Same-rank imports are refused unless listed in SIDEWAYS. */
const RANK: Record<string, number> = {
  main: 6,
  cli: 5, runtime: 5,
  smtp: 4, api: 4,
  intake: 3, delivery: 3, bounce: 3,
  queue: 2, events: 2, suppression: 2, auth: 2,
  db: 1.5,
  message: 1, tracking: 1, dkim: 1, spf: 1,
  dns: 0.5, // the resolver built from dns.servers: shared by delivery and the domain check
  mail: 0, config: 0, observe: 0, types: 0,
};

const SIDEWAYS = new Set([
  "cli>runtime", // `serve` starts the runtime
  "delivery>bounce", // a final bounce produces a DSN
  "bounce>intake", // … which re-enters through the one door (the Postfix `bounce` → `cleanup` path)
  "queue>events", "suppression>events", "auth>events", // state changes record their event in the same transaction
  "tracking>message", "dkim>message",
  "spf>dkim", // the domain check compares the published DKIM key with the configured one, read as signing reads it
  "mail>config", "observe>config", "config>mail",
]);

/** library → the folders (or files) allowed to import it */
const LIBRARY_HOME: Record<string, string[]> = {
  "smtp-server": ["smtp/"],
  elysia: ["api/"],
  "@elysiajs/openapi": ["api/"],
  "nodemailer/lib/smtp-connection": ["delivery/transport.ts", "delivery/attempt.ts"],
  juice: ["message/inline-css.ts", "types.d.ts"], // types.d.ts: the typings of its browser build, juice/client
  "@zone-eu/mailsplit": ["message/split.ts"],
  "iconv-lite": ["message/charset.ts"],
  "encoding-japanese": ["message/charset.ts"],
  libqp: ["message/transfer.ts"],
  libbase64: ["message/transfer.ts"],
  entities: ["tracking/"],
  mailparser: ["bounce/", "message/", "api/"],
  mailauth: ["dkim/", "spf/"],
  "dns-packet": ["dns/"],
};

interface Import {
  file: string;
  spec: string;
}

function sourceFiles(): string[] {
  return [...new Glob("**/*.ts").scanSync(SRC)].filter((f) => !f.endsWith(".test.ts"));
}

function importsOf(file: string): Import[] {
  const text = readFileSync(join(SRC, file), "utf8");
  const out: Import[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["']([^"']+)["']/g)) out.push({ file, spec: m[1]! });
  return out;
}

const top = (path: string) => (path.includes("/") ? path.slice(0, path.indexOf("/")) : path.replace(/\.(d\.)?ts$/, ""));

function localTarget(imp: Import): string | null {
  if (!imp.spec.startsWith(".")) return null;
  const abs = resolve(dirname(join(SRC, imp.file)), imp.spec);
  const rel = relative(SRC, abs);
  return rel.startsWith("..") ? null : rel;
}

const all = sourceFiles().flatMap(importsOf);

test("every src folder has a rank in the dependency table", () => {
  const unknown = [...new Set(sourceFiles().map(top))].filter((t) => !(t in RANK));
  expect(unknown).toEqual([]);
});

test("imports go downward only (or along a documented sideways edge)", () => {
  const bad: string[] = [];
  for (const imp of all) {
    const target = localTarget(imp);
    // db/schema.ts gathers every table for drizzle-kit; nothing at run time imports it
    if (!target || imp.file === "db/schema.ts") continue;
    const [from, to] = [top(imp.file), top(target)];
    if (from === to || SIDEWAYS.has(`${from}>${to}`)) continue;
    if (!(RANK[from]! > RANK[to]!)) bad.push(`${imp.file} → ${target}`);
  }
  expect(bad).toEqual([]);
});

test("a module's schema.ts is imported only by that module (and db/schema.ts for drizzle-kit)", () => {
  const bad = all
    .map((imp) => ({ imp, target: localTarget(imp) }))
    .filter(({ imp, target }) => target?.endsWith("/schema.ts") && target !== "config/schema.ts" && imp.file !== "db/schema.ts" && top(target) !== top(imp.file))
    .map(({ imp, target }) => `${imp.file} → ${target}`);
  expect(bad).toEqual([]);
});

test("each library is imported only from its home", () => {
  const bad: string[] = [];
  for (const imp of all) {
    for (const [lib, homes] of Object.entries(LIBRARY_HOME)) {
      if (imp.spec !== lib && !imp.spec.startsWith(lib + "/")) continue;
      if (!homes.some((h) => imp.file.startsWith(h))) bad.push(`${imp.file} imports ${imp.spec}`);
    }
  }
  expect(bad).toEqual([]);
});

test("HTMLRewriter (Bun's global, no import to check) is used only in tracking/links.ts", () => {
  const users = sourceFiles().filter((f) => /\bHTMLRewriter\s*\(/.test(readFileSync(join(SRC, f), "utf8")));
  expect(users).toEqual(["tracking/links.ts"]);
});
