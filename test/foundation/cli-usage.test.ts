/** Usage errors as an operator meets them: stray words, missing subcommands, where usage is printed. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { runCli, tempDir } from "../helpers/harness.ts";

let dir: { path: string; cleanup: () => void };

const outpost = (...args: string[]) => runCli(dir.path, args);

beforeAll(() => {
  dir = tempDir();
  // port 0: if `serve stray` were accepted it would start instead of failing, and the spawn would hang
  Bun.write(join(dir.path, "outpost.toml"), `[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n`);
});
afterAll(() => dir.cleanup());

describe("stray arguments exit 2 with the message and the usage on stderr", () => {
  const cases: string[][] = [
    ["migrate", "extra"],
    ["version", "extra"],
    ["serve", "stray"],
    ["user", "list", "extra"],
    ["key", "list", "extra"],
    ["suppression", "list", "extra"],
    ["user", "remove", "bob", "extra"],
    ["key", "revoke", "id", "extra"],
    ["suppression", "add", "a@example.com", "extra"],
    ["dkim", "generate", "example.com", "extra"],
    ["webhook", "list", "extra"],
    ["webhook", "retry", "app", "extra"],
  ];
  for (const argv of cases) {
    test(argv.join(" "), () => {
      const r = outpost(...argv);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`outpost: unexpected argument ${argv.at(-1)}`);
      expect(r.err).toContain("usage");
      expect(r.out).toBe("");
    });
  }
});

describe("version", () => {
  test("--help prints its usage and exits 0", () => {
    const r = outpost("version", "--help");
    expect(r.code).toBe(0);
    expect(r.out).toContain("usage: outpost version");
  });
});

describe("a missing command or subcommand is a usage error: usage on stderr, exit 2", () => {
  for (const argv of [[], ["user"], ["key"], ["queue"], ["suppression"], ["dkim"], ["webhook"], ["queue", "--config", "outpost.toml"], ["queue", "--limit", "5"]]) {
    test(`outpost ${argv.join(" ")}`.trim(), () => {
      const r = outpost(...argv);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toContain("usage");
    });
  }
  for (const argv of [["--help"], ["user", "--help"], ["key", "--help"], ["queue", "--help"], ["suppression", "--help"], ["dkim", "--help"], ["webhook", "--help"]]) {
    test(`outpost ${argv.join(" ")} prints usage on stdout and exits 0`, () => {
      const r = outpost(...argv);
      expect(r.code).toBe(0);
      expect(r.out).toContain("usage");
      expect(r.err).toBe("");
    });
  }
});
