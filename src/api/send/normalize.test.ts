import { describe, expect, test } from "bun:test";
import { ApiError } from "../../mail/errors.ts";
import { mailboxesOf, normalizeSend, optionsOf, recipientsFromMime } from "./normalize.ts";

describe("the envelope sender follows the SMTP address rules (mail/address.ts)", () => {
  const good = ["a@example.com", "first.last+tag@sub.example.co.uk", "x@localhost", "user@[192.0.2.1]", "ünï@bücher.de", "o'brien@example.ie", '"john doe"@example.com'];
  const bad = ["a", "@example.com", "a@", "a b@example.com", "a@exa mple.com", "<a@example.com>", "a@b@c", ".a@example.com", "a..b@example.com", "a@-example.com", "a\tb@example.com", "a\u007fb@example.com", "a@[::1]", `${"é".repeat(33)}@example.com`];
  const send = (envelope: string) => normalizeSend({ envelope, recipient: "b@example.org", body: "Subject: x\r\n\r\nx" }, "h.test");
  for (const a of good) test(`${JSON.stringify(a)} is accepted`, async () => expect((await send(a)).envelopeFrom).toBe(a));
  for (const a of bad) test(`${JSON.stringify(a)} is a 400 naming envelope`, async () => expect(await send(a).catch((e: unknown) => e)).toMatchObject({ status: 400, field: "envelope" }));
});

describe("mailboxesOf", () => {
  test("reads display names, comma lists and arrays", () => {
    expect(mailboxesOf("to", ["Ann <ann@example.com>, bob@example.org", '"Doe, Jane" <jane@example.net>'])).toEqual([
      { name: "Ann", address: "ann@example.com" },
      { address: "bob@example.org" },
      { name: "Doe, Jane", address: "jane@example.net" },
    ]);
  });

  test("names the item at fault", () => {
    try {
      mailboxesOf("cc", ["ok@example.org", "broken"]);
      throw new Error("no error");
    } catch (e) {
      expect(e).toBeInstanceOf(ApiError);
      expect((e as ApiError).field).toBe("cc[1]");
    }
  });
});

describe("recipientsFromMime", () => {
  test("takes every To, Cc and Bcc, folded and with groups", () => {
    const raw = Buffer.from(
      "To: A <a@example.org>,\r\n B <b@example.org>\r\nCc: Team: c@example.org, d@example.org;\r\nBcc: e@example.org\r\nTo: f@example.org\r\nReply-To: no@example.org\r\n\r\nbody",
    );
    expect(recipientsFromMime(raw)).toEqual(["a@example.org", "b@example.org", "c@example.org", "d@example.org", "e@example.org", "f@example.org"]);
  });

  test("reads LF-only messages too", () => {
    expect(recipientsFromMime(Buffer.from("To: a@example.org\nSubject: x\n\nbody\n"))).toEqual(["a@example.org"]);
  });

  test("reads mixed CRLF, LF and CR line ends as intake will", () => {
    expect(recipientsFromMime(Buffer.from("To: a@example.org\r\nCc: b@example.org\nBcc: c@example.org\rSubject: x\r\n\r\nbody"))).toEqual([
      "a@example.org",
      "b@example.org",
      "c@example.org",
    ]);
  });

  test("a NUL byte is a 400 naming body", () => {
    expect(() => recipientsFromMime(Buffer.from("To: a@example.org\r\n\r\na\u0000b"))).toThrow(expect.objectContaining({ status: 400, field: "body" }));
  });

  test("a body without a header block is a 400 naming body", () => {
    expect(() => recipientsFromMime(Buffer.from("hello world"))).toThrow(ApiError);
  });
});

describe("optionsOf", () => {
  test("maps every accepted boolean form and leaves omitted options unset", () => {
    expect(optionsOf({ inlinizecss: "yes", clicktracking: 0, openstracking: "true", bouncetracking: false, unsubscribe: "on" })).toEqual({
      inlineCss: true,
      trackClicks: false,
      trackOpens: true,
      trackBounces: false,
      unsubscribe: true,
    });
    expect(optionsOf({})).toEqual({});
  });
});

describe("normalizeSend", () => {
  test("a structured message without text, html or attachments still needs content", async () => {
    await expect(normalizeSend({ envelope: "a@example.com", recipient: "b@example.org" }, "h.test")).rejects.toThrow(/body/);
  });

  test("a body without a header block is a 400 naming body even when the recipients are given", async () => {
    for (const body of ["\r\njust text", "just text, no header"]) {
      const e = await normalizeSend({ envelope: "a@example.com", recipient: "b@example.org", body }, "h.test").catch((x: unknown) => x);
      expect(e).toMatchObject({ status: 400, field: "body" });
    }
  });

  test("an empty recipient list is refused rather than falling back to the headers", async () => {
    await expect(normalizeSend({ envelope: "a@example.com", recipient: [], body: "To: b@example.org\r\n\r\nx" }, "h.test")).rejects.toThrow(/recipient/);
  });
});
