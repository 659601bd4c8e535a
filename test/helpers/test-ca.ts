/**
 * @module test/helpers/test-ca — a throwaway certificate authority (openssl) for TLS verification tests.
 *
 *   const ca = makeTestCa(dir);                              // dir/ca.pem: the CA a route's tls_ca names
 *   const leaf = ca.issue("smarthost.test", ["127.0.0.5"]);  // { key, cert } PEM for a test receiver
 *
 * `available` is false when there is no openssl binary: tests that need it are skipped then.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const OPENSSL = ["/usr/bin/openssl", "/usr/local/bin/openssl"].find((p) => existsSync(p));

export const testCaAvailable = OPENSSL !== undefined;

export interface TestCa {
  /** path of the CA certificate (PEM) */
  caFile: string;
  /** a server certificate for these DNS names and IP addresses, signed by this CA */
  issue(name: string, ips?: string[]): { key: string; cert: string };
}

function openssl(args: string[], cwd: string): void {
  const p = Bun.spawnSync([OPENSSL!, ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`openssl ${args[0]} failed: ${p.stderr.toString()}`);
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export function makeTestCa(dir: string): TestCa {
  openssl(["req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=outpost test CA"], dir);
  let serial = 0;
  return {
    caFile: join(dir, "ca.pem"),
    issue(name, ips = []) {
      const base = `leaf${++serial}`;
      openssl(["req", ...EC, "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", `/CN=${name}`], dir);
      const san = [`DNS:${name}`, ...ips.map((ip) => `IP:${ip}`)].join(",");
      writeFileSync(join(dir, `${base}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
      openssl(["x509", "-req", "-in", `${base}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", String(serial),
        "-out", `${base}.pem`, "-days", "30", "-extfile", `${base}.ext`], dir);
      return { key: readFileSync(join(dir, `${base}.key`), "utf8"), cert: readFileSync(join(dir, `${base}.pem`), "utf8") };
    },
  };
}
