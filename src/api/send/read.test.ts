import { describe, expect, test } from "bun:test";
import { ApiError } from "../../mail/errors.ts";
import { bodyKind, fromForm, fromJson, WrittenNames } from "./read.ts";

describe("bodyKind", () => {
  test("knows the three body types, with parameters and +json", () => {
    expect(bodyKind("application/json; charset=utf-8")).toBe("json");
    expect(bodyKind("application/vnd.api+json")).toBe("json");
    expect(bodyKind("Application/X-WWW-Form-Urlencoded")).toBe("urlencoded");
    expect(bodyKind("multipart/form-data; boundary=x")).toBe("multipart");
    expect(bodyKind("text/plain")).toBeNull();
    expect(bodyKind(null)).toBeNull();
  });
});

describe("fromJson", () => {
  test("resolves case and aliases, and merges a list given under two names", () => {
    expect(fromJson(JSON.stringify({ ENVELOPE: "a@x.org", Recipient: "b@x.org", recipients: ["c@x.org"], MIME: "m", TrackOpens: "TRUE" }))).toEqual({
      envelope: "a@x.org",
      recipient: ["b@x.org", "c@x.org"],
      body: "m",
      openstracking: "true",
    });
  });

  test("keeps a list field given once as it was", () => {
    expect(fromJson(JSON.stringify({ to: "a@x.org" }))).toEqual({ to: "a@x.org" });
  });

  test("canonicalises attachment keys and wraps a single attachment", () => {
    expect(fromJson(JSON.stringify({ attachment: { FileName: "a", Content: "eA==", "Content-Type": "text/plain" } }))).toEqual({
      attachments: [{ filename: "a", content: "eA==", content_type: "text/plain" }],
    });
  });

  test("names an attachment by its place in the joined list when both aliases are given", () => {
    expect(() => fromJson(JSON.stringify({ attachment: { content: "eA==" }, attachments: [{ content: "eA==", bogus: 1 }] }))).toThrow(
      expect.objectContaining({ field: "attachments[1].bogus" }),
    );
  });

  for (const [what, text] of [
    ["an array", "[]"],
    ["a string", '"x"'],
    ["empty", ""],
    ["truncated", '{"a":'],
  ] as const) {
    test(`refuses a body that is ${what}`, () => expect(() => fromJson(text)).toThrow(ApiError));
  }
});

describe("fromForm", () => {
  test("collects repeated list fields and decodes JSON headers and attachments", () => {
    const out = fromForm([
      ["to", "a@x.org"],
      ["to[]", "b@x.org"],
      ["headers", "X-A: 1"],
      ["headers", '{"X-B":["2","3"]}'],
      ["attachments", '{"content":"eA=="}'],
    ]);
    expect(out).toEqual({
      to: ["a@x.org", "b@x.org"],
      headers: ["X-A: 1", { name: "X-B", value: "2" }, { name: "X-B", value: "3" }],
      attachments: [{ content: "eA==" }],
    });
  });

  test("a file is only accepted as body or attachment", () => {
    const file = new File(["x"], "x.txt");
    expect(fromForm([["attachment", file]])).toEqual({ attachments: [file] });
    expect(fromForm([["body", file]])).toEqual({ body: file });
    expect(() => fromForm([["subject", file]])).toThrow(ApiError);
  });

  test("invalid JSON in attachments names the field", () => {
    try {
      fromForm([["attachments", "{nope"]]);
      throw new Error("no error");
    } catch (e) {
      expect((e as ApiError).field).toBe("attachments");
    }
  });
});

describe("null and written names", () => {
  test("a JSON null is an omitted field, at the top and in an attachment", () => {
    expect(fromJson(JSON.stringify({ cc: null, Html: null, to: "a@x.org", attachments: [{ content: "eA==", ContentID: null }] }))).toEqual({
      to: "a@x.org",
      attachments: [{ content: "eA==" }],
    });
  });

  test("errors are renamed to the one name the client wrote for a field", () => {
    const written = new WrittenNames();
    fromJson(JSON.stringify({ Envelope: "a", TrackBounces: "x", recipient: "b", Recipients: "c", cc: null }), written);
    expect(written.rename("envelope")).toBe("Envelope");
    expect(written.rename("bouncetracking")).toBe("TrackBounces");
    expect(written.rename("recipient[1]")).toBe("recipient[1]"); // two names: canonical
    expect(written.rename("cc")).toBe("cc"); // null: not written
  });
});
