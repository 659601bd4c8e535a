/** `outpost user domains NAME [--add D] [--remove D]`: list and change the domains a user may send from. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { runCli, tempDir } from "../helpers/harness.ts";

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir("outpost-user-domains-");
  expect(runCli(dir.path, ["user", "add", "ann", "--password", "pw", "--domain", "Example.COM"]).code).toBe(0);
});
afterAll(() => dir?.cleanup());

test("lists, adds (IDNA, *.D for subdomains) and removes a user's sender domains", () => {
  expect(runCli(dir.path, ["user", "domains", "ann"]).out).toBe("ann may send from:\n  example.com\n");
  const added = runCli(dir.path, ["user", "domains", "ann", "--add", "*.Bücher.example", "--add", "news.example.org", "--add", "example.com"]);
  expect(added.code).toBe(0);
  expect(added.out).toBe("ann may send from:\n  example.com\n  *.xn--bcher-kva.example\n  news.example.org\n");
  const json = runCli(dir.path, ["user", "domains", "ann", "--remove", "example.com", "--json"]);
  expect(JSON.parse(json.out)).toEqual({ name: "ann", domains: ["*.xn--bcher-kva.example", "news.example.org"] });
  expect(runCli(dir.path, ["user", "list", "--json"]).out).toContain('"news.example.org"');
});

test("removing the last domain says the user may now send from any domain", () => {
  runCli(dir.path, ["user", "add", "bob", "--password", "pw", "--domain", "bob.test"]);
  const r = runCli(dir.path, ["user", "domains", "bob", "--remove", "bob.test"]);
  expect(r.out).toBe("bob may send from any domain (no sender domains are left)\n");
});

test("a bad domain is a usage error (exit 2); an unknown user exit 1", () => {
  const bad = runCli(dir.path, ["user", "domains", "ann", "--add", "not a domain"]);
  expect(bad.code).toBe(2);
  expect(bad.err).toContain('invalid sender domain "not a domain"');
  expect(runCli(dir.path, ["user", "domains", "nobody"]).code).toBe(1);
});
