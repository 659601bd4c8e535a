/**
 * @module smtp/tls — the certificate the SMTP listeners present: the operator's PEM files, or a
 * self-signed one generated once into data_dir (never smtp-server's built-in key, which is public).
 */
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SmtpConfig } from "../config/schema.ts";
import { selfSignedCertificate } from "./self-signed.ts";

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  /** where they came from, for the start-up log */
  source: "configured" | "generated" | "generated-earlier";
  certFile: string;
}

export const GENERATED_CERT = "tls.crt";
export const GENERATED_KEY = "tls.key";

/** The configured pair, or data_dir/tls.{crt,key}, creating them (0600) on first use. */
export function loadTlsMaterial(smtp: SmtpConfig, dataDir: string, hostname: string): TlsMaterial {
  if (smtp.tls_cert && smtp.tls_key) {
    return { key: readFileSync(smtp.tls_key), cert: readFileSync(smtp.tls_cert), source: "configured", certFile: smtp.tls_cert };
  }
  const certFile = join(dataDir, GENERATED_CERT);
  const keyFile = join(dataDir, GENERATED_KEY);
  if (existsSync(certFile) && existsSync(keyFile)) {
    return { key: readFileSync(keyFile), cert: readFileSync(certFile), source: "generated-earlier", certFile };
  }
  const pems = selfSignedCertificate(hostname);
  // write-then-rename, key first: a crash never leaves a cert without its key or a half-written file
  writePrivate(keyFile, pems.key);
  writePrivate(certFile, pems.cert);
  return { key: Buffer.from(pems.key), cert: Buffer.from(pems.cert), source: "generated", certFile };
}

function writePrivate(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
