import { afterEach, expect, test } from "bun:test";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { testConfig, tempDir } from "../../test/helpers/harness.ts";
import { selfSignedCertificate } from "./self-signed.ts";
import { loadTlsMaterial } from "./tls.ts";

const dirs: Array<{ cleanup: () => void }> = [];
afterEach(() => dirs.splice(0).forEach((d) => d.cleanup()));

test("a self-signed certificate names the host, matches its key and verifies with itself", () => {
  const pem = selfSignedCertificate("mail.example.com", new Date("2030-01-01T00:00:00Z"));
  const x = new X509Certificate(pem.cert);
  expect(x.subject).toBe("CN=mail.example.com");
  expect(x.subjectAltName).toBe("DNS:mail.example.com");
  expect(x.checkPrivateKey(createPrivateKey(pem.key))).toBe(true);
  expect(x.verify(x.publicKey)).toBe(true);
  expect(new Date(x.validTo).getUTCFullYear()).toBe(2040);
});

test("a serial drawn with a leading zero byte (or its top bit set) still makes a valid, positive DER INTEGER", () => {
  for (const first of [0x00, 0x01, 0x7f, 0x80, 0xff]) {
    const pem = selfSignedCertificate("mail.example.com", new Date(), 10, (n) => Buffer.alloc(n, first));
    const x = new X509Certificate(pem.cert); // OpenSSL: ERR_OSSL_ASN1_INVALID_INTEGER on a non-minimal one
    expect(x.serialNumber.length).toBe(32); // 16 bytes, no padding byte in front, no bytes lost
    expect(parseInt(x.serialNumber[0]!, 16)).toBeLessThan(8); // positive
  }
});

test("generates tls.crt and tls.key (0600) in data_dir once, then reuses them", () => {
  const d = tempDir();
  dirs.push(d);
  const config = testConfig(d.path);
  const first = loadTlsMaterial(config.smtp, d.path, "outpost.test");
  expect(first.source).toBe("generated");
  for (const f of ["tls.crt", "tls.key"]) expect(statSync(join(d.path, f)).mode & 0o777).toBe(0o600);
  const second = loadTlsMaterial(config.smtp, d.path, "outpost.test");
  expect(second.source).toBe("generated-earlier");
  expect(second.cert.equals(first.cert)).toBe(true);
  expect(second.key.equals(first.key)).toBe(true);
});

test("uses the configured tls_cert and tls_key when given", () => {
  const d = tempDir();
  dirs.push(d);
  const pem = selfSignedCertificate("configured.example");
  writeFileSync(join(d.path, "c.pem"), pem.cert);
  writeFileSync(join(d.path, "k.pem"), pem.key);
  const config = testConfig(d.path, `[smtp]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n`);
  const m = loadTlsMaterial(config.smtp, d.path, "outpost.test");
  expect(m.source).toBe("configured");
  expect(new X509Certificate(m.cert).subject).toBe("CN=configured.example");
});
