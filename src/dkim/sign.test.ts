import { beforeAll, describe, expect, test } from "bun:test";
import { mailauthPasses, mailauthResults, pythonResults, pythonWithDkim, type TxtRecords } from "../../test/helpers/dkim-verify.ts";
import { generateDkimKey } from "./generate.ts";
import { parsePrivateKey, type DkimAlgorithm, type DkimKey } from "./keys.ts";
import { DkimSigner } from "./sign.ts";

const records: TxtRecords = {};

function makeKey(domain: string, selector: string, algorithm: DkimAlgorithm): DkimKey {
  const generated = generateDkimKey(algorithm);
  records[`${selector}._domainkey.${domain}`] = generated.record;
  return { domain, selector, ...parsePrivateKey(generated.privatePem) };
}

let both: DkimSigner;
let rsaOnly: DkimSigner;
const python = pythonWithDkim();

beforeAll(() => {
  const rsa = makeKey("example.com", "rsa1", "rsa");
  const ed = makeKey("example.com", "ed1", "ed25519");
  both = new DkimSigner([rsa, ed]);
  rsaOnly = new DkimSigner([rsa, makeKey("bounces.example.net", "b1", "rsa")]);
});

const message = (from = "Ann <ann@example.com>", extra = "") =>
  Buffer.from(
    `From: ${from}\r\nTo: bob@other.org\r\nSubject: Hello  there\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n` +
      `Message-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `List-Unsubscribe: <https://example.com/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n` +
      `X-Mailer: test\r\n${extra}\r\nHello Bob,  \r\n\r\nbye\r\n`,
  );

/** The message without its signature fields on top (one field per DKIM-Signature, folded lines included). */
function unsigned(signed: Buffer): Buffer {
  const text = signed.toString("latin1");
  return Buffer.from(text.replace(/^(DKIM-Signature:.*\r\n([ \t].*\r\n)*)+/, ""), "latin1");
}

describe("DkimSigner", () => {
  test("an RSA and an Ed25519 key of the From domain both sign, and mailauth verifies both", async () => {
    const { body, signedWith, algorithms } = await both.sign(message(), "ann@example.com");
    expect(signedWith).toEqual(["example.com/rsa1", "example.com/ed1"]);
    expect(algorithms).toEqual(["rsa-sha256", "ed25519-sha256"]);
    expect(await mailauthResults(body, records)).toEqual(["rsa1._domainkey.example.com: pass", "ed1._domainkey.example.com: pass"]);
  });

  test.skipIf(python === null)("python3-dkim verifies both signatures", async () => {
    const { body } = await both.sign(message(), "ann@example.com");
    expect(pythonResults(python!, body, records)).toEqual([true, true]);
  });
  if (python === null) test.skip("python3-dkim is not installed (apt-get install python3-dkim): its checks are skipped", () => {});

  test("the signature fields are prepended and every byte of the message follows unchanged", async () => {
    const original = message();
    const { body } = await both.sign(original, "ann@example.com");
    expect(body.toString("latin1").startsWith("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")).toBe(true);
    expect(unsigned(body).equals(original)).toBe(true);
  });

  test("h= lists the present fields of the signed set, From once more, and not X-Mailer", async () => {
    const { body } = await rsaOnly.sign(message(), "ann@example.com");
    const h = /\bh=([^;]+);/.exec(body.toString().replace(/\r\n[ \t]/g, " "))![1]!.split(":").map((n) => n.trim().toLowerCase());
    expect(h.filter((n) => n === "from")).toHaveLength(2);
    expect(new Set(h)).toEqual(new Set(["from", "to", "subject", "date", "message-id", "mime-version", "content-type", "list-unsubscribe", "list-unsubscribe-post"]));
  });

  test("a second From added after signing breaks the signature (From is oversigned)", async () => {
    const { body } = await both.sign(message(), "ann@example.com");
    const forged = Buffer.concat([Buffer.from("From: Boss <boss@example.com>\r\n"), body]);
    expect(await mailauthPasses(forged, records)).toEqual([false, false]);
    if (python) expect(pythonResults(python, forged, records)).toEqual([false, false]);
  });

  test("changing one byte of the body breaks the signature", async () => {
    const { body } = await both.sign(message(), "ann@example.com");
    const tampered = Buffer.from(body);
    tampered[tampered.lastIndexOf("bye")] = "B".charCodeAt(0);
    expect(await mailauthPasses(tampered, records)).toEqual([false, false]);
    if (python) expect(pythonResults(python, tampered, records)).toEqual([false, false]);
  });

  test("changing a signed field breaks the signature; adding an unsigned one does not", async () => {
    const { body } = await rsaOnly.sign(message(), "ann@example.com");
    const subject = Buffer.from(body.toString("latin1").replace("Subject: Hello  there", "Subject: Hello there!"), "latin1");
    expect(await mailauthPasses(subject, records)).toEqual([false]);
    const received = Buffer.concat([Buffer.from("Received: from relay.other.org\r\n"), body]);
    expect(await mailauthResults(received, records)).toEqual(["rsa1._domainkey.example.com: pass"]);
  });

  test("mail from another domain is not signed, whatever the envelope says, when no key matches", async () => {
    const original = message("Carl <carl@other.org>");
    const result = await both.sign(original, "carl@other.org");
    expect(result.signedWith).toEqual([]);
    expect(result.body).toBe(original);
  });

  test("a key signs for subdomains of its domain, but not for a domain that merely ends the same", async () => {
    const sub = await both.sign(message("news@news.example.com"), "news@news.example.com");
    expect(sub.signedWith).toEqual(["example.com/rsa1", "example.com/ed1"]);
    expect(await mailauthResults(sub.body, records)).toEqual(["rsa1._domainkey.example.com: pass", "ed1._domainkey.example.com: pass"]);
    expect((await both.sign(message("x@badexample.com"), "x@badexample.com")).signedWith).toEqual([]);
  });

  test("the From domain's key is preferred over the envelope sender's (DMARC alignment)", async () => {
    const { signedWith } = await rsaOnly.sign(message(), "b+token@bounces.example.net");
    expect(signedWith).toEqual(["example.com/rsa1"]);
  });

  test("without a key for the From domain, the envelope sender's domain signs", async () => {
    const { body, signedWith } = await rsaOnly.sign(message("Carl <carl@other.org>"), "b+token@bounces.example.net");
    expect(signedWith).toEqual(["bounces.example.net/b1"]);
    expect(await mailauthResults(body, records)).toEqual(["b1._domainkey.bounces.example.net: pass"]);
  });

  test("From domains are compared case-insensitively and in A-labels", async () => {
    expect((await both.sign(message('"Ann" <Ann@EXAMPLE.COM>'), "")).signedWith).toEqual(["example.com/rsa1", "example.com/ed1"]);
  });

  test("a message without a From field goes out unsigned (RFC 6376 requires From to be signed)", async () => {
    const original = Buffer.from("To: bob@other.org\r\nSubject: x\r\n\r\nbody\r\n");
    const result = await both.sign(original, "ann@example.com");
    expect(result).toEqual({ body: original, signedWith: [], algorithms: [] });
  });

  test("folded fields and long bodies verify", async () => {
    const longBody = Array.from({ length: 2000 }, (_, i) => `line ${i}\twith  spaces   `).join("\r\n");
    const original = Buffer.from(
      `From: Ann\r\n <ann@example.com>\r\nTo: a@other.org,\r\n\tb@other.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n${longBody}\r\n\r\n\r\n`,
    );
    const { body } = await both.sign(original, "");
    expect(await mailauthResults(body, records)).toEqual(["rsa1._domainkey.example.com: pass", "ed1._domainkey.example.com: pass"]);
    if (python) expect(pythonResults(python, body, records)).toEqual([true, true]);
  });

  test("t= is the injected clock's time", async () => {
    const signer = new DkimSigner([makeKey("example.org", "t1", "ed25519")], () => Date.UTC(2026, 11, 7, 10, 0, 0));
    const { body } = await signer.sign(message("a@example.org"), "");
    expect(body.toString()).toContain(`t=${Date.UTC(2026, 11, 7, 10, 0, 0) / 1000};`);
  });
});
