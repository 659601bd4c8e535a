/** Users and API keys against a real SQLite file: what SMTP AUTH and the API rely on. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openStore, type Store } from "../db/client.ts";
import { tempDir } from "../../test/helpers/harness.ts";
import { createKey, hashKey, revokeKey, userForKey } from "./keys.ts";
import { addUser, countUsers, CredentialChecker, removeUser, setPassword } from "./users.ts";

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

  test("a success is cached for its time to live, then verified again", async () => {
    let now = 1_000;
    let verifies = 0;
    const realVerify = Bun.password.verify;
    Bun.password.verify = (...a: Parameters<typeof realVerify>) => (verifies++, realVerify(...a));
    try {
      const checker = new CredentialChecker(store.db, 60_000, () => now);
      expect(await checker.check("alice", "correct horse")).not.toBeNull();
      expect(await checker.check("alice", "correct horse")).not.toBeNull();
      expect(verifies).toBe(1); // the second check was the cache's
      expect(checker.cached("alice", "correct horse")?.name).toBe("alice"); // what SMTP asks before it counts a guess
      expect(checker.cached("alice", "wrong")).toBeNull();
      expect(checker.cached("mallory", "correct horse")).toBeNull();
      now += 60_001;
      expect(checker.cached("alice", "correct horse")).toBeNull();
      expect(await checker.check("alice", "correct horse")).not.toBeNull();
      expect(verifies).toBe(2);
    } finally {
      Bun.password.verify = realVerify;
    }
  });

  test("a password change, removal or new domain list takes effect at once, though the old success is cached", async () => {
    // the CLI changes users in another process, which cannot clear this process's cache
    await addUser(store.db, "carol", "carol-old", ["old.example"]);
    const checker = new CredentialChecker(store.db, 60_000, () => 1_000);
    expect((await checker.check("carol", "carol-old"))?.domains).toEqual(["old.example"]);
    await setPassword(store.db, "carol", "carol-new");
    expect(await checker.check("carol", "carol-old")).toBeNull();
    expect(await checker.check("carol", "carol-new")).not.toBeNull();

    removeUser(store.db, "carol");
    expect(await checker.check("carol", "carol-new")).toBeNull();

    await addUser(store.db, "carol", "carol-new", ["new.example"]); // re-added with other domains, same password
    expect((await checker.check("carol", "carol-new"))?.domains).toEqual(["new.example"]);
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
