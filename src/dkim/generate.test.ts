import { describe, expect, test } from "bun:test";
import { createPublicKey } from "node:crypto";
import { defaultSelector, generateDkimKey, txtStrings } from "./generate.ts";
import { parsePrivateKey } from "./keys.ts";

describe("DKIM key generation", () => {
  test("the default selector is the algorithm and the month in UTC", () => {
    expect(defaultSelector("rsa", new Date("2026-12-31T23:30:00-02:00"))).toBe("rsa202701");
    expect(defaultSelector("ed25519", new Date("2026-03-05T12:00:00Z"))).toBe("ed202603");
  });

  test("an RSA record publishes the 2048-bit key's SubjectPublicKeyInfo", () => {
    const key = generateDkimKey("rsa");
    const p = /; p=(.+)$/.exec(key.record)![1]!;
    const published = createPublicKey({ key: Buffer.from(p, "base64"), format: "der", type: "spki" });
    expect(published.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(published.export({ type: "spki", format: "pem" })).toBe(createPublicKey(parsePrivateKey(key.privatePem).privateKey).export({ type: "spki", format: "pem" }));
  });

  test("an Ed25519 record publishes the bare 32-byte key (RFC 8463), not its SubjectPublicKeyInfo", () => {
    const key = generateDkimKey("ed25519");
    const p = Buffer.from(/; p=(.+)$/.exec(key.record)![1]!, "base64");
    expect(p.length).toBe(32);
    const spki = createPublicKey(parsePrivateKey(key.privatePem).privateKey).export({ type: "spki", format: "der" });
    expect(spki.subarray(spki.length - 32).equals(p)).toBe(true);
  });

  test("a record is cut into TXT strings of at most 255 octets that join back to it", () => {
    const record = "v=DKIM1; k=rsa; p=" + "A".repeat(600);
    const strings = txtStrings(record);
    expect(strings.map((s) => s.length)).toEqual([255, 255, 108]);
    expect(strings.join("")).toBe(record);
  });
});
