/**
 * `outpost dkim generate` as an operator uses it: the key file it writes, the DNS record it prints and the
 * [[dkim]] lines it prints, which `serve` must accept and sign with so that the printed record verifies.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.ts";
import { loadDkimKeys } from "../../src/dkim/keys.ts";
import { DkimSigner } from "../../src/dkim/sign.ts";
import { silentLogger } from "../../src/observe/log.ts";
import { mailauthResults, pythonResults, pythonWithDkim, type TxtRecords } from "../helpers/dkim-verify.ts";
import { runCli, tempDir } from "../helpers/harness.ts";
import { serveUntilExit } from "../helpers/serve.ts";

let dir: { path: string; cleanup: () => void };
let configFile = "";
const outpost = (...args: string[]) => runCli(dir.path, [...args, "--config", configFile]);
const python = pythonWithDkim();

beforeAll(() => {
  dir = tempDir();
  configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = "data"\n[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n`);
});
afterAll(() => dir.cleanup());

/** The DNS record in `generate`'s output: its owner name and its text (the quoted strings joined). */
function printedRecord(out: string): { name: string; text: string; strings: string[] } {
  const line = out.split("\n").find((l) => / IN TXT "/.test(l));
  if (!line) throw new Error(`no TXT record in:\n${out}`);
  const strings = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
  return { name: line.slice(0, line.indexOf(" ")), text: strings.join(""), strings };
}

/** The [[dkim]] table in `generate`'s output. */
function printedConfig(out: string): string {
  return out.slice(out.indexOf("[[dkim]]")).trim();
}

const message = Buffer.from(
  "From: Ann <ann@example.com>\r\nTo: bob@other.org\r\nSubject: hello\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n" +
    "Message-ID: <g1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello Bob\r\n",
);

describe("outpost dkim generate", () => {
  const records: TxtRecords = {};
  const printed: string[] = [];

  test("writes an RSA key 0600 in DATA_DIR/dkim (0700), named DOMAIN.SELECTOR.pem, with the default selector", () => {
    const r = outpost("dkim", "generate", "example.com");
    expect(r.code).toBe(0);
    // the algorithm and the month it was made (src/dkim/generate.test.ts checks which month)
    const selector = /(\S+)\._domainkey\./.exec(r.out)?.[1] ?? "";
    expect(selector).toMatch(/^rsa20\d\d(0[1-9]|1[0-2])$/);
    const file = join(dir.path, "data", "dkim", `example.com.${selector}.pem`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir.path, "data", "dkim")).mode & 0o777).toBe(0o700);
    expect(readFileSync(file, "utf8")).toStartWith("-----BEGIN PRIVATE KEY-----");
    expect(r.out).toContain(`wrote ${file}`);
    const record = printedRecord(r.out);
    expect(record.name).toBe(`${selector}._domainkey.example.com.`);
    expect(record.text).toStartWith("v=DKIM1; k=rsa; p=MII");
    // a 2048-bit key does not fit one 255-octet TXT string
    expect(record.strings.length).toBe(2);
    for (const s of record.strings) expect(s.length).toBeLessThanOrEqual(255);
    expect(printedConfig(r.out)).toBe(`[[dkim]]\ndomain = "example.com"\nselector = "${selector}"\nprivate_key_file = "${file}"`);
    records[record.name.replace(/\.$/, "")] = record.text;
    printed.push(printedConfig(r.out));
  });

  test("makes an Ed25519 key with --algorithm ed25519 and --selector", () => {
    const r = outpost("dkim", "generate", "example.com", "--algorithm", "ed25519", "--selector", "ed1");
    expect(r.code).toBe(0);
    expect(statSync(join(dir.path, "data", "dkim", "example.com.ed1.pem")).mode & 0o777).toBe(0o600);
    const record = printedRecord(r.out);
    expect(record.name).toBe("ed1._domainkey.example.com.");
    // RFC 8463: the bare 32-byte key, 44 characters of base64
    expect(record.text).toMatch(/^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    records[record.name.replace(/\.$/, "")] = record.text;
    printed.push(printedConfig(r.out));
  });

  test("the printed [[dkim]] lines configure keys whose signatures verify against the printed records", async () => {
    expect(printed).toHaveLength(2);
    appendFileSync(configFile, `\n${printed.join("\n\n")}\n`);
    const config = loadConfig(configFile);
    const signer = new DkimSigner(loadDkimKeys(config.dkim, config.file, silentLogger));
    const { body, signedWith } = await signer.sign(message, "ann@example.com");
    expect(signedWith).toHaveLength(2);
    expect(await mailauthResults(body, records)).toEqual(Object.keys(records).map((name) => `${name}: pass`));
    if (python) expect(pythonResults(python, body, records)).toEqual([true, true]);
  });

  test("refuses to overwrite an existing key: exit 1 naming the file, which is left as it was", () => {
    const file = join(dir.path, "data", "dkim", "example.com.ed1.pem");
    const before = readFileSync(file, "utf8");
    const r = outpost("dkim", "generate", "example.com", "--algorithm", "ed25519", "--selector", "ed1");
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${file} exists`);
    expect(r.out).toBe("");
    expect(readFileSync(file, "utf8")).toBe(before);
  });

  const usageErrors: [string, string[], RegExp][] = [
    ["a missing DOMAIN", ["dkim", "generate"], /needs DOMAIN/],
    ["an unknown algorithm", ["dkim", "generate", "example.org", "--algorithm", "dsa"], /--algorithm: expected rsa or ed25519/],
    ["an invalid domain", ["dkim", "generate", "not a domain"], /invalid domain "not a domain"/],
    ["an invalid selector", ["dkim", "generate", "example.org", "--selector", "a b"], /--selector: expected a DKIM selector/],
    ["an unknown subcommand", ["dkim", "rotate"], /unknown command dkim rotate/],
  ];
  for (const [what, argv, message] of usageErrors) {
    test(`${what} exits 2 with a message and writes nothing`, () => {
      const keys = () => readdirSync(join(dir.path, "data", "dkim")).sort();
      const before = keys();
      const r = outpost(...argv);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(message);
      expect(keys()).toEqual(before);
    });
  }
});

describe("serve with a bad [[dkim]] key", () => {
  test("exits 2 naming the config file, dkim[N].private_key_file and the key file, before creating a database", async () => {
    const sub = join(dir.path, "bad");
    const keyFile = join(dir.path, "not-a-key.pem");
    writeFileSync(keyFile, "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n");
    const file = join(dir.path, "bad.toml");
    writeFileSync(
      file,
      `data_dir = ${JSON.stringify(sub)}\n[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:0"\n` +
        `[[dkim]]\ndomain = "example.com"\nselector = "s1"\nprivate_key_file = ${JSON.stringify(keyFile)}\n`,
    );
    const r = await serveUntilExit(file);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`outpost: ${file}: dkim[0].private_key_file: ${keyFile}: holds a public key, not the private key`);
    expect(existsSync(join(sub, "outpost.db"))).toBe(false);
  });
});
