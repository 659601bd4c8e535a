import { describe, expect, test } from "bun:test";
import { addHeader, countHeaders, headerValue, joinInPlace, joinMessage, normalizeLineEndings, receivedField, removeHeaders, rfc5322Date, splitAtHeaderEnd, splitMessage } from "./headers.ts";
import { isKnownCrlf, LineEndWriter } from "./line-ends.ts";

const MSG = Buffer.from("From: a@x.test\r\nSubject: hello\r\n  world\r\nX-Keep: 1\r\n\r\nbody line\r\n.dot\r\n");

describe("header block editing", () => {
  test("split then join gives back the same bytes", () => {
    expect(joinMessage(splitMessage(MSG)).equals(MSG)).toBe(true);
  });

  test("a folded header is read unfolded", () => {
    expect(headerValue(splitMessage(MSG), "subject")).toBe("hello  world");
  });

  test("a value's 8-bit bytes are read as UTF-8, a plain ASCII value as it is; fields are counted case-insensitively", () => {
    const m = splitMessage(Buffer.from("Subject: Gr\xc3\xbc\xc3\x9fe\r\nTo: a@x.test\r\nto: b@x.test\r\nX-Bad: \xff\r\n\r\n", "latin1"));
    expect(headerValue(m, "Subject")).toBe("Grüße");
    expect(headerValue(m, "TO")).toBe("a@x.test");
    expect(headerValue(m, "x-bad")).toBe("\ufffd");
    expect(countHeaders(m, "To")).toBe(2);
    expect(countHeaders(m, "Cc")).toBe(0);
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

describe("header block end, as Postfix reads it", () => {
  const split = (s: string) => {
    const m = splitAtHeaderEnd(Buffer.from(s, "latin1"));
    return { names: m.headers.map((h) => h.name), body: m.body.toString("latin1"), joined: joinMessage({ headers: m.headers, body: m.body }).toString("latin1") };
  };

  test("a well-formed message splits as splitMessage does", () => {
    expect(joinMessage(splitAtHeaderEnd(MSG)).equals(MSG)).toBe(true);
  });

  test("the first line that is no header field and no continuation starts the body", () => {
    expect(split("From: a@b.example\r\n folded\r\nhello there\r\nX: y\r\n\r\nbody\r\n")).toEqual({
      names: ["From"],
      body: "hello there\r\nX: y\r\n\r\nbody\r\n",
      joined: "From: a@b.example\r\n folded\r\n\r\nhello there\r\nX: y\r\n\r\nbody\r\n",
    });
  });

  test("no header at all: all body, including a leading space line and a leading blank line", () => {
    expect(split("hello world\r\n")).toEqual({ names: [], body: "hello world\r\n", joined: "\r\nhello world\r\n" });
    expect(split(" indented\r\n").names).toEqual([]);
    expect(split("\r\nSubject: not a header\r\n").body).toBe("Subject: not a header\r\n");
    expect(split("").joined).toBe("\r\n");
  });

  test("obsolete space before the colon is a header, and so is a name with 8-bit bytes; a space in the name is not", () => {
    expect(split("Subject : x\r\n\r\n").names).toEqual(["Subject"]);
    expect(split("Foo Bar: x\r\n").names).toEqual([]);
    // an odd name must not end the block: a Bcc after it would be delivered as body text
    expect(split("To: a@x.test\r\nX-Caf\xc3\xa9: 1\r\nBcc: secret@z.test\r\n\r\nhi\r\n").names).toEqual(["To", "X-Caf\xc3\xa9", "Bcc"]);
    expect(split(": x\r\n").names).toEqual([]);
  });

  test("only CRLF ends a line: a bare LF or CR stays inside its field, also in a view into a larger buffer", () => {
    expect(split("A: 1\n2\r3\r\nB: \n\r\n\r\nbody\n\r\n")).toEqual({
      names: ["A", "B"],
      body: "body\n\r\n",
      joined: "A: 1\n2\r3\r\nB: \n\r\n\r\nbody\n\r\n",
    });
    const whole = Buffer.from("\r\nX: 0\r\nA: 1\r\n\r\nbody", "latin1");
    const view = splitAtHeaderEnd(whole.subarray(8));
    expect(view.headers.map((h) => h.raw)).toEqual(["A: 1\r\n"]);
    expect(view.body.toString()).toBe("body");
  });

  test("says how the block ended", () => {
    expect(splitAtHeaderEnd(Buffer.from("A: 1\r\n\r\nb\r\n")).endedBy).toBe("blank");
    expect(splitAtHeaderEnd(Buffer.from("A: 1\r\nb\r\n")).endedBy).toBe("line");
    expect(splitAtHeaderEnd(Buffer.from("A: 1\r\n")).endedBy).toBe("end");
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

describe("trace and date fields", () => {
  test("dates are RFC 5322 in UTC", () => {
    expect(rfc5322Date(Date.UTC(2026, 10, 25, 13, 45, 54, 999))).toBe("Wed, 25 Nov 2026 13:45:54 +0000");
    expect(rfc5322Date(new Date(Date.UTC(2026, 10, 25, 13, 45, 55)))).toBe("Wed, 25 Nov 2026 13:45:55 +0000");
  });

  test("our Received field folds before `by` and the date, with or without a `from` part", () => {
    const at = Date.UTC(2026, 10, 25, 12, 0, 0);
    expect(receivedField({ from: "[192.0.2.7]", by: "mx.test", with: "HTTP", at }).toString()).toBe(
      "Received: from [192.0.2.7]\r\n\tby mx.test (outpost) with HTTP;\r\n\tWed, 25 Nov 2026 12:00:00 +0000\r\n",
    );
    expect(receivedField({ from: null, by: "mx.test", with: "HTTP", at }).toString()).toBe(
      "Received: by mx.test (outpost) with HTTP;\r\n\tWed, 25 Nov 2026 12:00:00 +0000\r\n",
    );
  });
});

describe("known CRLF through a split and a join (no second scan of a message received over SMTP)", () => {
  function received(text: string, room = 256): Buffer {
    const w = new LineEndWriter(text.length, room);
    w.write(Buffer.from(text, "latin1"));
    return w.finish();
  }
  const region = (raw: Buffer, room: number) => Buffer.from(raw.buffer, raw.byteOffset - room, room + raw.length);

  test("a message a LineEndWriter made stays known as CRLF when its header block is rewritten, in place or copied", () => {
    const raw = received("From: a@x.test\nSubject: hi\n\nbody\n.line\n", 256);
    const split = splitAtHeaderEnd(raw);
    expect(isKnownCrlf(split.body)).toBe(true);
    const m = addHeader(split, "Message-ID", "<1@x.test>");
    const inPlace = joinInPlace(m, region(raw, 256))!;
    expect(inPlace.toString()).toBe("From: a@x.test\r\nSubject: hi\r\nMessage-ID: <1@x.test>\r\n\r\nbody\r\n.line\r\n");
    expect(isKnownCrlf(inPlace)).toBe(true);
    expect(isKnownCrlf(joinMessage(m))).toBe(true);
  });

  test("a header field with a bare line end, or a body not known as CRLF, leaves the joined message to be looked at", () => {
    const split = splitAtHeaderEnd(received("Subject: hi\r\n\r\nbody\r\n"));
    expect(isKnownCrlf(joinMessage(addHeader(split, "X-Odd", "a\nb")))).toBe(false);
    const unknown = splitAtHeaderEnd(Buffer.from("Subject: hi\r\n\r\nbody\r\n"));
    expect(isKnownCrlf(unknown.body)).toBe(false);
    expect(isKnownCrlf(joinMessage(unknown))).toBe(false);
  });
});
