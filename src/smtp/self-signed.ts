/**
 * @module smtp/self-signed — a self-signed ECDSA P-256 server certificate made with node:crypto.
 *
 * Why by hand: the `selfsigned` package fails in this dependency tree (mailauth pins
 * @peculiar/asn1-schema 2.8.0, so the 2.11 copies its x509 stack needs are installed once per
 * package and register their ASN.1 schemas in different registries: "Cannot get schema for
 * 'AlgorithmIdentifier'"). A certificate is a small, fixed DER structure (RFC 5280 §4.1), so we
 * write it here: key generation and signing are node:crypto's, only the framing is ours.
 */
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";

export interface SelfSignedPem {
  key: string;
  cert: string;
}

export function selfSignedCertificate(
  hostname: string,
  now = new Date(),
  years = 10,
  random: (n: number) => Buffer = randomBytes,
): SelfSignedPem {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const serial = random(16);
  // DER INTEGER: the top bit clear keeps it positive, and 0x40 set keeps the first byte non-zero,
  // since a leading 0x00 before a clear bit is non-minimal and OpenSSL refuses the certificate
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  const name = seq(set(seq(oid("2.5.4.3"), der(0x0c, Buffer.from(hostname, "utf8")))));
  const notAfter = new Date(now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + years);
  const ecdsaSha256 = seq(oid("1.2.840.10045.4.3.2"));
  const tbs = seq(
    der(0xa0, int(Buffer.from([2]))), // [0] version v3
    int(serial),
    ecdsaSha256,
    name,
    seq(time(new Date(now.getTime() - 3600_000)), time(notAfter)),
    name,
    publicKey.export({ type: "spki", format: "der" }),
    der(0xa3, seq(
      extension("2.5.29.19", seq(), true), // basicConstraints: not a CA
      extension("2.5.29.15", der(0x03, Buffer.from([0x07, 0x80])), true), // keyUsage: digitalSignature
      extension("2.5.29.37", seq(oid("1.3.6.1.5.5.7.3.1"))), // extKeyUsage: serverAuth
      extension("2.5.29.17", seq(der(0x82, Buffer.from(hostname, "ascii")))), // subjectAltName dNSName
    )),
  );
  const signature = sign("sha256", tbs, privateKey); // ECDSA-Sig-Value in DER, as X.509 wants it
  const cert = seq(tbs, ecdsaSha256, der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  return {
    key: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    cert: `-----BEGIN CERTIFICATE-----\n${cert.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n")}-----END CERTIFICATE-----\n`,
  };
}

// --- DER framing (X.690): tag, length, content ---

function der(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : lengthBytes(n);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

function lengthBytes(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const seq = (...items: Buffer[]) => der(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => der(0x31, Buffer.concat(items));
const int = (bytes: Buffer) => der(0x02, bytes);

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split(".").map(Number);
  const out = [40 * a + b];
  for (const v of rest) {
    const chunk = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) chunk.unshift((x & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return der(0x06, Buffer.from(out));
}

/** UTCTime before 2050, GeneralizedTime from then on (RFC 5280 §4.1.2.5). */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z"; // YYYYMMDDHHMMSSZ
  return d.getUTCFullYear() < 2050 ? der(0x17, Buffer.from(iso.slice(2), "ascii")) : der(0x18, Buffer.from(iso, "ascii"));
}

function extension(id: string, value: Buffer, critical = false): Buffer {
  return seq(oid(id), ...(critical ? [der(0x01, Buffer.from([0xff]))] : []), der(0x04, value));
}
