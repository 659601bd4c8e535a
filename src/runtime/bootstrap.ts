/** @module runtime/bootstrap — first-start chores: the instance secret, and an admin user + API key when there are no users. */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createKey, listKeys } from "../auth/keys.ts";
import { addUser, generatePassword, listUsers } from "../auth/users.ts";
import type { Db } from "../db/client.ts";

/** Where the instance secret lives; its presence also says the data dir has been used (db/client.ts refuses a lost database). */
export function secretPath(dataDir: string): string {
  return join(dataDir, "secret");
}

/** The HMAC secret for tracking tokens: 32 random bytes in data_dir/secret (0600), made once. */
export function instanceSecret(dataDir: string): Buffer {
  const path = secretPath(dataDir);
  if (!existsSync(path)) {
    writeFileSync(path, Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex") + "\n", { mode: 0o600, flag: "wx" });
  }
  return Buffer.from(readFileSync(path, "utf8").trim(), "hex");
}

/**
 * The lines a first start prints once (on stderr, so stdout stays JSON logs): with no users at all, it creates
 * `admin` and a key and returns both secrets. Users made with `outpost user add` before the first start get no
 * key made for them; when none of them has one, the lines say how to make it.
 */
export async function firstRun(db: Db, freshDataDir: boolean): Promise<string[]> {
  const users = listUsers(db);
  if (users.length === 0) {
    const password = generatePassword();
    const admin = await addUser(db, "admin", password);
    const { key } = createKey(db, admin.id, "default");
    return ["first start: created user admin and an API key (shown only now)", `password: ${password}`, `api key: ${key}`];
  }
  if (!freshDataDir || listKeys(db).some((k) => !k.revokedAt)) return [];
  const name = users[0]!.name;
  return [
    `first start: users exist (${users.map((u) => u.name).join(", ")}), so no admin was created, and none has an API key`,
    `create one with: outpost key create NAME --user ${name}`,
  ];
}
