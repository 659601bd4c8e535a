import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../../test/helpers/harness.ts";
import { ConfigError } from "../config/errors.ts";
import type { LogFields } from "../observe/log.ts";
import { loadDkimKeys, parsePrivateKey } from "./keys.ts";

let dir: { path: string; cleanup: () => void };
beforeAll(() => (dir = tempDir()));
afterAll(() => dir.cleanup());

const rsa = (bits: number) => generateKeyPairSync("rsa", { modulusLength: bits });
const pem = (key: { export(o: object): string | Buffer }, type: string, extra: object = {}) =>
  String(key.export({ type, format: "pem", ...extra }));

function keyFile(name: string, text: string): string {
  const file = join(dir.path, name);
  writeFileSync(file, text);
  return file;
}

/** Loads one [[dkim]] entry and returns the keys and the warnings logged. */
function load(file: string) {
  const warnings: { event: string; fields?: LogFields }[] = [];
  const keys = loadDkimKeys([{ domain: "example.com", selector: "s1", private_key_file: file }], "/etc/outpost/outpost.toml", {
    warn: (event, fields) => warnings.push({ event, fields }),
  });
  return { keys, warnings };
}

function loadError(file: string): ConfigError {
  try {
    load(file);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("DKIM private keys", () => {
  test("RSA keys load from PKCS#8 and PKCS#1 PEM, Ed25519 from PKCS#8", () => {
    const key = rsa(2048).privateKey;
    expect(parsePrivateKey(pem(key, "pkcs8"))).toMatchObject({ algorithm: "rsa", bits: 2048 });
    expect(parsePrivateKey(pem(key, "pkcs1"))).toMatchObject({ algorithm: "rsa", bits: 2048 });
    expect(parsePrivateKey(pem(generateKeyPairSync("ed25519").privateKey, "pkcs8"))).toMatchObject({ algorithm: "ed25519" });
  });

  test("a 2048-bit key loads without a warning; a 1024-bit key loads with one", () => {
    expect(load(keyFile("ok.pem", pem(rsa(2048).privateKey, "pkcs8"))).warnings).toEqual([]);
    const weak = load(keyFile("weak.pem", pem(rsa(1024).privateKey, "pkcs1")));
    expect(weak.keys[0]).toMatchObject({ domain: "example.com", selector: "s1", algorithm: "rsa", bits: 1024 });
    expect(weak.warnings).toEqual([{ event: "dkim_key_weak", fields: expect.objectContaining({ bits: 1024, domain: "example.com", selector: "s1" }) }]);
  });

  const refused: [string, () => string, RegExp][] = [
    ["an RSA key under 1024 bits", () => pem(rsa(768).privateKey, "pkcs8"), /768 bits.*under 1024/],
    ["an EC key", () => pem(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "pkcs8"), /unsupported key type ec/],
    ["an encrypted key", () => pem(rsa(2048).privateKey, "pkcs8", { cipher: "aes-256-cbc", passphrase: "pw" }), /encrypted/],
    ["a public key", () => pem(rsa(2048).publicKey, "spki"), /public key, not the private key/],
    ["text that is no PEM", () => "hello\n", /not a PEM key/],
    ["a truncated PEM", () => "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n", /malformed PRIVATE KEY PEM/],
  ];
  for (const [what, make, problem] of refused) {
    test(`${what} is refused with an error naming the config file, dkim[0].private_key_file and the key file`, () => {
      const file = keyFile(`bad-${what.replace(/\W+/g, "-")}.pem`, make());
      const error = loadError(file);
      expect(error.message).toStartWith(`/etc/outpost/outpost.toml: dkim[0].private_key_file: ${file}: `);
      expect(error.problem).toMatch(problem);
    });
  }

  test.skipIf(process.getuid?.() === 0)("a key file that cannot be read is refused", () => {
    const file = keyFile("unreadable.pem", pem(rsa(2048).privateKey, "pkcs8"));
    chmodSync(file, 0o000);
    expect(loadError(file).problem).toMatch(/cannot read/);
  });
});
