/** @module runtime/bootstrap — first-start chores: the instance secret, and an admin user + API key when there are no users. */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createKey } from "../auth/keys.ts";
import { addUser, countUsers, generatePassword } from "../auth/users.ts";
import type { Db } from "../db/client.ts";

/** The HMAC secret for tracking tokens: 32 random bytes in data_dir/secret (0600), made once. */
export function instanceSecret(dataDir: string): Buffer {
  const path = join(dataDir, "secret");
  if (!existsSync(path)) {
    writeFileSync(path, Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex") + "\n", { mode: 0o600, flag: "wx" });
  }
  return Buffer.from(readFileSync(path, "utf8").trim(), "hex");
}

/** With no users at all, creates `admin` and a key and returns the lines to print once. */
export async function firstRunAdmin(db: Db): Promise<string[]> {
  if (countUsers(db) > 0) return [];
  const password = generatePassword();
  const admin = await addUser(db, "admin", password);
  const { key } = createKey(db, admin.id, "default");
  return ["first start: created user admin and an API key (shown only now)", `password: ${password}`, `api key: ${key}`];
}
