/** @module main — argv → cli command; nothing else. */
import { run } from "./cli/index.ts";

process.umask(0o077); // everything outpost writes (database, WAL, keys, certs) is private to its user
process.exitCode = await run(process.argv.slice(2));
