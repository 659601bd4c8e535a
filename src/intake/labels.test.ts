import { describe, expect, test } from "bun:test";
import { splitMessage } from "../message/headers.ts";
import { labelsOfFields, labelsOfHeaders, mergeLabels } from "./labels.ts";
import { prepareMessage } from "./prepare.ts";

const headersOf = (text: string) => splitMessage(Buffer.from(text)).headers;
const read = (text: string) => labelsOfHeaders(headersOf(text), (h) => h.raw.slice(h.raw.indexOf(":") + 1).trim());

describe("labels from X-Outpost-Tag and X-Outpost-Metadata-KEY", () => {
  test("the field name is matched in any case; the metadata key keeps the case it is written in", () => {
    expect(read("x-outpost-tag: news\r\nX-OUTPOST-METADATA-Order_Id: 7\r\nSubject: s\r\n\r\n")).toEqual({ tag: "news", metadata: { Order_Id: "7" } });
  });

  test("the same field twice is refused with 554 5.6.0, naming it", () => {
    expect(() => read("X-Outpost-Tag: a\r\nX-Outpost-Tag: b\r\n\r\n")).toThrow(expect.objectContaining({ code: 554, enhanced: "5.6.0", field: "tag" }));
    expect(() => read("X-Outpost-Metadata-k: a\r\nX-Outpost-Metadata-k: b\r\n\r\n")).toThrow(expect.objectContaining({ field: "metadata.k" }));
  });

  test("prepareMessage reads them, removes them, and decodes an encoded-word", () => {
    const p = prepareMessage(Buffer.from("X-Outpost-Tag: =?UTF-8?B?w6l0w6k=?=\r\nX-Outpost-Metadata-a: 1\r\nSubject: s\r\n\r\nbody\r\n"), "h.test");
    expect(p.headerLabels).toEqual({ tag: "été", metadata: { a: "1" } });
    expect(p.body.toString()).not.toContain("X-Outpost");
  });
});

describe("mergeLabels", () => {
  test("the request's tag and metadata win over the headers', metadata key by key", () => {
    expect(mergeLabels({ tag: "h", metadata: { a: "h", b: "h" } }, labelsOfFields("r", { b: "r", c: "r" }))).toEqual({
      tag: "r",
      metadata: { a: "h", b: "r", c: "r" },
    });
  });

  test('a request tag of "" is no tag, even over a header', () => {
    expect(mergeLabels({ tag: "h" }, labelsOfFields("  ", undefined)).tag).toBeNull();
  });

  test("more than 20 keys together is refused naming metadata", () => {
    const eleven = (p: string) => Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`${p}${i}`, "v"]));
    expect(() => mergeLabels({ metadata: eleven("h") }, labelsOfFields(undefined, eleven("r")))).toThrow(expect.objectContaining({ field: "metadata", httpStatus: 400 }));
  });
});
