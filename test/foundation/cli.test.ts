/** The CLI as an operator uses it: real process, temp data dir, exit codes and printed secrets. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCli, tempDir } from "../helpers/harness.ts";

let dir: { path: string; cleanup: () => void };

const outpost = (...args: string[]) => runCli(dir.path, args);

beforeAll(() => {
  dir = tempDir();
});
afterAll(() => dir.cleanup());

describe("outpost CLI", () => {
  test("version prints the version and exits 0", () => {
    const r = outpost("version");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^outpost \d+\.\d+\.\d+/);
  });

  test("no arguments prints usage and exits 2; --help exits 0", () => {
    expect(outpost().code).toBe(2);
    const help = outpost("--help");
    expect(help.code).toBe(0);
    expect(help.out).toContain("user add|list|remove|passwd");
  });

  test("every command group has --help", () => {
    for (const cmd of ["serve", "user", "key", "suppression", "dkim", "migrate"]) {
      const r = outpost(cmd, "--help");
      expect(r.code, cmd).toBe(0);
      expect(r.out, cmd).toContain("usage");
    }
  });

  test("unknown command and unknown option exit 2 with a message", () => {
    const a = outpost("frobnicate");
    expect(a.code).toBe(2);
    expect(a.err).toContain("unknown command frobnicate");
    const b = outpost("user", "list", "--frob");
    expect(b.code).toBe(2);
    expect(b.err).toContain("--frob");
  });

  test("user add prints a generated password once; the data dir is 0700 and the database 0600", () => {
    const r = outpost("user", "add", "alice", "--domain", "example.com");
    expect(r.code).toBe(0);
    const line = r.out.split("\n").find((l) => l.startsWith("password: "));
    expect(line).toBeDefined();
    expect(line!.length).toBeGreaterThan("password: ".length + 16);
    expect(statSync(join(dir.path, "data")).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir.path, "data/outpost.db")).mode & 0o777).toBe(0o600);
  });

  test("user add with --password prints no secret; a duplicate name exits 1", () => {
    const r = outpost("user", "add", "bob", "--password", "s3cret-pass");
    expect(r.code).toBe(0);
    expect(r.out).not.toContain("password:");
    const dup = outpost("user", "add", "bob", "--password", "x");
    expect(dup.code).toBe(1);
    expect(dup.err).toContain("already exists");
  });

  test("user list shows users, --json gives their domains", () => {
    const text = outpost("user", "list");
    expect(text.out).toMatch(/alice\s+example\.com/);
    const json = JSON.parse(outpost("user", "list", "--json").out) as { name: string; domains: string[] }[];
    expect(json.find((u) => u.name === "alice")?.domains).toEqual(["example.com"]);
  });

  test("user passwd and user remove; removing an unknown user exits 1", () => {
    expect(outpost("user", "passwd", "bob").out).toMatch(/^password: \S+$/m);
    expect(outpost("user", "remove", "bob").code).toBe(0);
    expect(outpost("user", "remove", "bob").code).toBe(1);
    expect(outpost("user", "list").out).not.toContain("bob");
  });

  test("key create prints an op_ key of 40 URL-safe characters; list shows it; revoke marks it", () => {
    const r = outpost("key", "create", "ci", "--user", "alice");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^api key: op_[A-Za-z0-9_-]{40}$/m);
    const keys = JSON.parse(outpost("key", "list", "--json").out) as { id: string; user: string; revoked_at: string | null }[];
    const key = keys.find((k) => k.user === "alice")!;
    expect(key.revoked_at).toBeNull();
    expect(outpost("key", "revoke", key.id).code).toBe(0);
    const after = JSON.parse(outpost("key", "list", "--json").out) as { id: string; revoked_at: string | null }[];
    expect(after.find((k) => k.id === key.id)!.revoked_at).not.toBeNull();
    expect(outpost("key", "revoke", key.id).code).toBe(1);
  });

  test("key create for a missing user exits 1, as user remove does, and says how to create one", () => {
    const r = outpost("key", "create", "x", "--user", "nobody");
    expect(r.code).toBe(1);
    expect(r.err).toContain("outpost user add nobody");
  });

  test("user add says how to make the user an API key (serve makes one only for the admin it creates)", () => {
    const r = outpost("user", "add", "carol", "--password", "carol-pass");
    expect(r.code).toBe(0);
    expect(r.out).toContain("outpost key create NAME --user carol");
  });

  test("key create without --user, when there is no admin, exits 2 naming the users there are", () => {
    const r = outpost("key", "create", "ci");
    expect(r.code).toBe(2);
    expect(r.err).toContain("key create needs --user: there is no user admin; the users are alice, carol");
  });

  test("suppression add, list and remove work on the ownerless list without --user", () => {
    expect(outpost("suppression", "add", "Bounce@Example.com")).toMatchObject({ code: 0, out: "bounce@example.com added to the ownerless list\n" });
    expect(outpost("suppression", "list").out).toMatch(/\(no user\)\s+bounce@example\.com\s+manual/);
    expect(outpost("suppression", "remove", "bounce@example.com").code).toBe(0);
    expect(outpost("suppression", "remove", "bounce@example.com").code).toBe(1);
    expect(outpost("suppression", "add", "not-an-address").code).toBe(2);
  });

  test("suppression --user works on that user's list, and list shows users by name", () => {
    expect(outpost("user", "add", "sue", "--password", "pw-sue").code).toBe(0);
    expect(outpost("user", "add", "tim", "--password", "pw-tim").code).toBe(0);
    expect(outpost("suppression", "add", '"Gone"@Bücher.example', "--user", "sue")).toMatchObject({
      code: 0,
      out: "gone@xn--bcher-kva.example added to the list of user sue\n",
    });
    expect(outpost("suppression", "add", "other@example.com", "--user", "tim").code).toBe(0);
    const all = outpost("suppression", "list").out;
    expect(all).toMatch(/^sue\s+gone@xn--bcher-kva\.example\s+manual/m);
    expect(all).toMatch(/^tim\s+other@example\.com\s+manual/m);
    const sues = JSON.parse(outpost("suppression", "list", "--user", "sue", "--json").out) as { user: string; address: string }[];
    expect(sues.map((e) => [e.user, e.address])).toEqual([["sue", "gone@xn--bcher-kva.example"]]);
    // the entry is on sue's list, not tim's, nor the ownerless one
    expect(outpost("suppression", "remove", "gone@bücher.example", "--user", "tim").code).toBe(1);
    expect(outpost("suppression", "remove", "gone@bücher.example").code).toBe(1);
    expect(outpost("suppression", "remove", "GONE@bücher.example", "--user", "sue").code).toBe(0);
    expect(outpost("suppression", "list", "--user", "nobody").code).toBe(1);
    // removing a user removes their list
    expect(outpost("user", "remove", "tim").out).toContain("with the 1 entry of their suppression list");
    expect(outpost("suppression", "list").out).not.toContain("other@example.com");
  });

  test("a bad config exits 2 naming the file and the key", () => {
    const file = join(dir.path, "bad.toml");
    writeFileSync(file, `[smtp]\nmax_message_size = "lots"\n`);
    const r = outpost("user", "list", "--config", file);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`${file}: smtp.max_message_size:`);
  });

  test("a missing --config file exits 2 naming it", () => {
    const r = outpost("migrate", "--config", join(dir.path, "nope.toml"));
    expect(r.code).toBe(2);
    expect(r.err).toContain("nope.toml");
  });

  test("migrate applies the embedded migrations and is idempotent", () => {
    const first = outpost("migrate");
    expect(first.code).toBe(0);
    expect(outpost("migrate").out).toContain("up to date");
  });
});
