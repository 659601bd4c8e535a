/** Users and API keys against a real SQLite file: what SMTP AUTH and the API rely on. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { createKey, hashKey, revokeKey, userForKey } from "./keys.ts";
import { addUser, countUsers, CredentialChecker, setPassword } from "./users.ts";

let dir: ReturnType<typeof tempDir>;
let store: Store;

beforeAll(() => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
});
afterAll(() => {
  store.close();
  dir.cleanup();
});

describe("credentials", () => {
  test("the right password finds the user; a wrong one, or an unknown user, finds nobody", async () => {
    expect(countUsers(store.db)).toBe(0);
    await addUser(store.db, "alice", "correct horse", ["Example.com"]);
    expect(countUsers(store.db)).toBe(1);
    const checker = new CredentialChecker(store.db);
    const alice = await checker.check("alice", "correct horse");
    expect(alice?.name).toBe("alice");
    expect(alice?.domains).toEqual(["example.com"]);
    expect(await checker.check("alice", "wrong")).toBeNull();
    expect(await checker.check("mallory", "correct horse")).toBeNull();
  });

  test("a success is cached for its time to live, then the store is asked again", async () => {
    let now = 1_000;
    const checker = new CredentialChecker(store.db, 60_000, () => now);
    expect(await checker.check("alice", "correct horse")).not.toBeNull();
    await setPassword(store.db, "alice", "new password");
    // within the TTL the cached success stands (SPEC allows a few minutes) …
    expect(await checker.check("alice", "correct horse")).not.toBeNull();
    // … after it, the old password no longer works and the new one does
    now += 60_001;
    expect(await checker.check("alice", "correct horse")).toBeNull();
    expect(await checker.check("alice", "new password")).not.toBeNull();
    checker.clear();
    expect(await checker.check("alice", "correct horse")).toBeNull();
  });
});

describe("API keys", () => {
  test("a key is stored only as its SHA-256 and finds its user until revoked", async () => {
    const bob = await addUser(store.db, "bob", "pw");
    const { key, info } = createKey(store.db, bob.id, "ci");
    expect(key).toMatch(/^op_[A-Za-z0-9_-]{40}$/);
    const stored = store.sqlite.query("SELECT key_hash FROM api_keys WHERE id = ?").get(info.id) as { key_hash: string };
    expect(stored.key_hash).toBe(hashKey(key));
    expect(JSON.stringify(store.sqlite.query("SELECT * FROM api_keys").all())).not.toContain(key);
    expect(userForKey(store.db, key)).toBe(bob.id);
    expect(userForKey(store.db, key.slice(0, -1) + (key.endsWith("A") ? "B" : "A"))).toBeNull();
    expect(userForKey(store.db, "not-a-key")).toBeNull();
    revokeKey(store.db, info.id);
    expect(userForKey(store.db, key)).toBeNull();
  });
});
