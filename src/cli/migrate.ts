/** @module cli/migrate — `outpost migrate`: apply pending migrations and exit. */
import { loadConfig } from "../config/load.ts";
import { applyMigrations, openStore } from "../db/client.ts";
import { embeddedMigrations } from "../db/migrations.ts";
import { secretPath } from "../runtime/bootstrap.ts";
import { parseArgs } from "./args.ts";
import { print } from "./context.ts";

const MIGRATE_USAGE = "usage: outpost migrate [--config FILE]\n  apply database migrations and exit";

export async function migrateCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { positionals: 0, usage: MIGRATE_USAGE });
  if (args.flags.has("help")) {
    print(MIGRATE_USAGE);
    return 0;
  }
  const config = loadConfig(args.values.config);
  // openStore applies migrations itself; ask again afterwards to report the state
  // a lost database is refused, not re-created empty (db/client.ts)
  const store = openStore(config.database.path, { usedBefore: secretPath(config.data_dir) });
  const pending = applyMigrations(store.sqlite, embeddedMigrations());
  const total = embeddedMigrations().length;
  store.close();
  print(`database ${config.database.path}: ${total} migration(s) applied${pending.length ? "" : ", up to date"}`);
  return 0;
}
