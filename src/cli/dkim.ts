/** @module cli/dkim — `outpost dkim generate`: a new signing key in the data dir, and what to publish and configure. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { domainToASCII } from "node:url";
import { parseSelector } from "../config/build.ts";
import { loadConfig } from "../config/load.ts";
import { parseDomain } from "../config/units.ts";
import { ensurePrivateDir } from "../db/client.ts";
import { DKIM_ALGORITHMS, defaultSelector, generateDkimKey, RSA_BITS, txtStrings } from "../dkim/generate.ts";
import type { DkimAlgorithm } from "../dkim/keys.ts";
import { UsageError } from "../mail/errors.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { print } from "./context.ts";

export const DKIM_USAGE = `usage:
  outpost dkim generate DOMAIN [--selector S] [--algorithm rsa|ed25519]
      writes a private key to DATA_DIR/dkim/DOMAIN.S.pem (never over an existing file) and prints the
      DNS TXT record to publish and the [[dkim]] lines for outpost.toml.
      --algorithm  rsa (${RSA_BITS} bits, the default; every receiver checks it) or ed25519 (RFC 8463)
      --selector   default: the algorithm and the month, e.g. rsa202612 or ed202612
common: --config FILE`;

export async function dkimCommand(argv: string[], now: () => Date = () => new Date()): Promise<number> {
  const args = parseArgs(argv, { values: ["selector", "algorithm"] });
  const [sub, domainArg] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(DKIM_USAGE, args.flags.has("help"));
  if (sub !== "generate") throw new UsageError(`unknown command dkim ${sub}\n${DKIM_USAGE}`);
  expectPositionals(args, 2, DKIM_USAGE);
  if (args.flags.has("json")) throw new UsageError("dkim generate prints text only; --json is not supported");
  if (!domainArg) throw new UsageError(`dkim generate needs DOMAIN\n${DKIM_USAGE}`);
  const algorithm = parseAlgorithm(args.values.algorithm ?? "rsa");
  const domain = usage(() => parseDomain(domainToASCII(domainArg)), `invalid domain ${JSON.stringify(domainArg)}`);
  const selector = usage(() => parseSelector(args.values.selector ?? defaultSelector(algorithm, now())), "--selector");
  const config = loadConfig(args.values.config);

  const dir = join(config.data_dir, "dkim");
  ensurePrivateDir(dir);
  const file = join(dir, `${domain}.${selector}.pem`);
  const key = generateDkimKey(algorithm);
  try {
    // "wx": created here or not at all, so a key already published (and perhaps in use) is never replaced
    writeFileSync(file, key.privatePem, { flag: "wx", mode: 0o600 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new Error(`${file} exists; choose another --selector (keys are rotated under a new selector), or remove the file first`);
    }
    throw e;
  }

  print(`wrote ${file} (${algorithm === "rsa" ? `RSA ${RSA_BITS} bits` : "Ed25519"}, mode 0600)`);
  print();
  print("1. Publish this DNS TXT record (in a provider's web form: the name, and the quoted parts joined):");
  print(`${selector}._domainkey.${domain}. IN TXT ${txtStrings(key.record).map((s) => `"${s}"`).join(" ")}`);
  print();
  print("2. Add to outpost.toml, then restart outpost serve:");
  print("[[dkim]]");
  print(`domain = ${JSON.stringify(domain)}`);
  print(`selector = ${JSON.stringify(selector)}`);
  print(`private_key_file = ${JSON.stringify(file)}`);
  return 0;
}

function parseAlgorithm(text: string): DkimAlgorithm {
  const algorithm = DKIM_ALGORITHMS.find((a) => a === text.toLowerCase());
  if (!algorithm) throw new UsageError(`--algorithm: expected ${DKIM_ALGORITHMS.join(" or ")}, got ${JSON.stringify(text)}`);
  return algorithm;
}

/** Runs a value parser; its complaint becomes a usage error (exit 2) prefixed with `what`. */
function usage<T>(parse: () => T, what: string): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError(`${what}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
