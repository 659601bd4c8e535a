import { describe, expect, test } from "bun:test";
import { addHeader, headerValue, joinMessage, normalizeLineEndings, removeHeaders, splitMessage } from "./headers.ts";

const MSG = Buffer.from("From: a@x.test\r\nSubject: hello\r\n  world\r\nX-Keep: 1\r\n\r\nbody line\r\n.dot\r\n");

describe("header block editing", () => {
  test("split then join gives back the same bytes", () => {
    expect(joinMessage(splitMessage(MSG)).equals(MSG)).toBe(true);
  });

  test("a folded header is read unfolded", () => {
    expect(headerValue(splitMessage(MSG), "subject")).toBe("hello  world");
  });

  test("removing and adding headers leaves the body byte for byte", () => {
    const m = addHeader(removeHeaders(splitMessage(MSG), ["subject"]), "Message-ID", "<a@b>");
    const out = joinMessage(m).toString();
    expect(out).toBe("From: a@x.test\r\nX-Keep: 1\r\nMessage-ID: <a@b>\r\n\r\nbody line\r\n.dot\r\n");
  });

  test("a message with no body is all header", () => {
    const m = splitMessage(Buffer.from("Subject: x\r\n"));
    expect(m.headers.length).toBe(1);
    expect(m.body.length).toBe(0);
  });
});

describe("line endings", () => {
  test("CRLF text is returned as is", () => {
    expect(normalizeLineEndings(MSG)).toBe(MSG);
  });

  test("bare LF and bare CR become CRLF, so a smuggled terminator stays inside the one message", () => {
    for (const raw of ["a\n.\nb", "a\r.\rb", "a\n.\r\nb", "a\r\n.\nb", "a\r.\r\nb", "a\r\n.\rb"]) {
      expect(normalizeLineEndings(Buffer.from(raw)).toString()).toBe("a\r\n.\r\nb");
    }
  });

  test("NUL is refused", () => {
    expect(() => normalizeLineEndings(Buffer.from("a\0b"))).toThrow("NUL");
  });
});
