import { describe, expect, test } from "bun:test";
import iconv from "iconv-lite";
import { rewriteHtmlParts, type RewriteResult } from "./parts.ts";

const crlf = (...lines: string[]) => Buffer.from(lines.join("\r\n"), "latin1");
const bytes = (...parts: (string | Buffer)[]) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, "latin1"))));
const mark = (html: string) => html.replace("</p>", " MARK</p>");
const ok = (r: RewriteResult) => {
  if (!r.ok) throw new Error(`expected ok, got: ${r.reason}`);
  return r;
};

const ALTERNATIVE = crlf(
  "From: a@x.test",
  'Content-Type: multipart/alternative; boundary="b1"',
  "",
  "preamble text",
  "--b1",
  "Content-Type: text/plain; charset=utf-8",
  "",
  "<p>not html</p>",
  "--b1",
  "Content-Type: text/html; charset=utf-8",
  "Content-Transfer-Encoding: quoted-printable",
  "",
  "<p>caf=C3=A9 with a soft=",
  " break</p>",
  "--b1--  ",
  "epilogue text",
  "",
);

describe("structure kept", () => {
  test("a transform that changes nothing gives back the very same bytes", async () => {
    const r = ok(await rewriteHtmlParts(ALTERNATIVE, (h) => h));
    expect(r.changedParts).toBe(0);
    expect(r.body.equals(ALTERNATIVE)).toBe(true);
  });

  test("only the text/html part changes: headers, the text part, preamble, boundaries and epilogue keep their bytes", async () => {
    const r = ok(await rewriteHtmlParts(ALTERNATIVE, mark));
    expect(r.changedParts).toBe(1);
    const out = r.body.toString("latin1");
    const [before, after] = ALTERNATIVE.toString("latin1").split("<p>caf=C3=A9 with a soft=\r\n break</p>");
    expect(out.startsWith(before!)).toBe(true);
    expect(out.endsWith(after!)).toBe(true);
    expect(out.slice(before!.length, out.length - after!.length)).toBe("<p>caf=C3=A9 with a soft break MARK</p>");
  });

  test("the transform sees decoded text, and parts are numbered in MIME order", async () => {
    const seen: [string, number][] = [];
    await rewriteHtmlParts(ALTERNATIVE, (html, { partIndex }) => {
      seen.push([html, partIndex]);
      return html;
    });
    expect(seen).toEqual([["<p>café with a soft break</p>", 0]]);
  });

  test("an HTML attachment and an HTML part inside an attached message are not touched", async () => {
    const msg = crlf(
      'Content-Type: multipart/mixed; boundary="m"',
      "",
      "--m",
      "Content-Type: text/html",
      "",
      "<p>body</p>",
      "--m",
      "Content-Type: text/html; name=page.html",
      "Content-Disposition: attachment; filename=page.html",
      "",
      "<p>attached page</p>",
      "--m",
      "Content-Type: message/rfc822",
      "",
      'Content-Type: multipart/alternative; boundary="inner"',
      "",
      "--inner",
      "Content-Type: text/html",
      "",
      "<p>forwarded</p>",
      "--inner--",
      "--m--",
      "",
    );
    const r = ok(await rewriteHtmlParts(msg, mark));
    expect(r.changedParts).toBe(1);
    expect(r.body.toString()).toBe(msg.toString().replace("<p>body</p>", "<p>body MARK</p>"));
  });

  test("a single-part HTML message keeps its header block and its final line end", async () => {
    const msg = crlf("Subject: x", "Content-Type: text/html; charset=us-ascii", "", "<p>one</p>", "");
    expect(ok(await rewriteHtmlParts(msg, mark)).body.toString()).toBe("Subject: x\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>one MARK</p>\r\n");
  });

  test("a message without HTML comes back unchanged and ok", async () => {
    const msg = crlf("Subject: x", "", "plain text", "");
    const r = ok(await rewriteHtmlParts(msg, mark));
    expect([r.changedParts, r.body.equals(msg)]).toEqual([0, true]);
  });
});

describe("transfer encodings kept", () => {
  const html = (encoding: string, body: string | Buffer, charset = "utf-8") =>
    bytes(`Content-Type: text/html; charset=${charset}\r\nContent-Transfer-Encoding: ${encoding}\r\n\r\n`, body);

  test("base64 stays base64, wrapped at the line length it had", async () => {
    const text = `<p>${"x".repeat(200)}</p>`;
    const b64 = Buffer.from(text).toString("base64").replace(/.{64}/g, "$&\r\n");
    const r = ok(await rewriteHtmlParts(html("base64", b64 + "\r\n"), mark));
    const body = r.body.toString().split("\r\n\r\n")[1]!;
    const lines = body.split("\r\n");
    expect(lines[0]!.length).toBe(64);
    expect(lines.at(-1)).toBe("");
    expect(Buffer.from(body, "base64").toString()).toBe(mark(text));
  });

  test("quoted-printable stays quoted-printable with lines of at most 76", async () => {
    const r = ok(await rewriteHtmlParts(html("quoted-printable", `<p>${"é".repeat(100)}</p>`.replace(/é/g, "=C3=A9=\r\n")), mark));
    const body = r.body.toString().split("\r\n\r\n")[1]!;
    expect(body.split("\r\n").every((l) => l.length <= 76)).toBe(true);
    expect(r.body.toString()).toContain("Content-Transfer-Encoding: quoted-printable");
    expect(body).toContain("MARK");
  });

  test("8bit stays 8bit", async () => {
    const r = ok(await rewriteHtmlParts(html("8bit", Buffer.from("<p>café</p>\r\n")), mark));
    expect(r.body.toString()).toBe("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>café MARK</p>\r\n");
  });

  test("7bit text that gains an 8-bit character goes out quoted-printable, and the header says so", async () => {
    const r = ok(await rewriteHtmlParts(html("7bit", "<p>plain</p>\r\n"), (h) => h.replace("plain", "plaîn")));
    expect(r.body.toString()).toBe("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>pla=C3=AEn</p>\r\n");
  });

  test("an 8bit line pushed past 998 octets goes out quoted-printable", async () => {
    const r = ok(await rewriteHtmlParts(html("8bit", "<p>x</p>\r\n"), (h) => h.replace("x", "y".repeat(1200))));
    const out = r.body.toString();
    expect(out).toContain("Content-Transfer-Encoding: quoted-printable");
    expect(out.split("\r\n").every((l) => l.length <= 998)).toBe(true);
  });

  test("bare line feeds a transform writes go out as CRLF", async () => {
    const r = ok(await rewriteHtmlParts(html("8bit", "<p>x</p>\r\n"), (h) => h.replace("</p>", "</p>\n<style>\np{}\n</style>")));
    expect(r.body.toString()).toEndWith("\r\n\r\n<p>x</p>\r\n<style>\r\np{}\r\n</style>\r\n");
  });
});

describe("charsets kept", () => {
  const part = (charset: string, encoding: string, body: Buffer) =>
    bytes(`Content-Type: text/html; charset=${charset}\r\nContent-Transfer-Encoding: ${encoding}\r\n\r\n`, body, "\r\n");
  const bodyOf = (b: Buffer) => b.subarray(b.indexOf("\r\n\r\n") + 4);

  for (const [charset, text] of [
    ["ISO-8859-1", "<p>Ça coûte 5 £, naïve</p>"],
    ["Windows-1252", "<p>“quoted” — 5 €</p>"],
    ["Shift_JIS", "<p>日本語のニュースレター</p>"],
    ["ISO-2022-JP", "<p>日本語のニュースレター</p>"],
    ["EUC-KR", "<p>한국어 뉴스레터</p>"],
  ] as const) {
    test(`${charset} text is rewritten and written back in ${charset}`, async () => {
      const encoded = charset === "ISO-2022-JP" ? jis(text) : iconv.encode(text, charset);
      const r = ok(await rewriteHtmlParts(part(charset, "base64", Buffer.from(encoded.toString("base64"))), mark));
      expect(r.body.toString()).toContain(`charset=${charset}\r\n`);
      const out = Buffer.from(bodyOf(r.body).toString(), "base64");
      expect(charset === "ISO-2022-JP" ? unjis(out) : iconv.decode(out, charset)).toBe(mark(text));
    });
  }

  test("a rewrite the charset cannot hold switches that part to UTF-8 and says so in its Content-Type", async () => {
    const msg = part("iso-8859-1", "quoted-printable", Buffer.from("<p>Caf=E9</p>"));
    const r = ok(await rewriteHtmlParts(msg, (h) => h.replace("</p>", " 5 €</p>")));
    expect(r.body.toString()).toBe("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>Caf=C3=A9 5 =E2=82=AC</p>\r\n");
  });

  test("an HTML part without a charset that gains a non-ASCII character is labelled UTF-8", async () => {
    const msg = crlf("Content-Type: text/html", "", "<p>x</p>", "");
    const r = ok(await rewriteHtmlParts(msg, (h) => h.replace("x", "✓")));
    expect(r.body.toString()).toBe("Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>=E2=9C=93</p>\r\n");
  });

  test("mislabelled 8-bit text in a US-ASCII part keeps its bytes", async () => {
    const latin = part("us-ascii", "8bit", Buffer.from("<p>caf\xe9</p>", "latin1"));
    expect(ok(await rewriteHtmlParts(latin, mark)).body.equals(bytes(latin.toString("latin1").replace("</p>", " MARK</p>")))).toBe(true);
  });
});

describe("what cannot be rewritten comes back unchanged with the reason", () => {
  const cases: [string, Buffer, RegExp][] = [
    ["a missing closing boundary", crlf('Content-Type: multipart/alternative; boundary="b"', "", "--b", "Content-Type: text/html", "", "<p>x</p>", ""), /without its closing boundary/],
    ["a multipart without a boundary", crlf("Content-Type: multipart/mixed", "", "--b", "Content-Type: text/html", "", "<p>x</p>", "--b--", ""), /without a usable boundary/],
    ["invalid base64", crlf("Content-Type: text/html", "Content-Transfer-Encoding: base64", "", "PHA+eDwvcD4*%$", ""), /HTML part 0: invalid base64/],
    ["an unknown transfer encoding", crlf("Content-Type: text/html", "Content-Transfer-Encoding: x-uuencode", "", "<p>x</p>", ""), /Content-Transfer-Encoding "x-uuencode" is unknown/],
    ["an unknown charset", crlf("Content-Type: text/html; charset=x-klingon", "", "<p>x</p>", ""), /charset "x-klingon" is not supported/],
    ["UTF-7 (markup smuggling)", crlf("Content-Type: text/html; charset=utf-7", "", "+ADw-p+AD4-x", ""), /charset "utf-7" is not supported/],
    ["bytes that are not UTF-8", bytes("Content-Type: text/html; charset=utf-8\r\n\r\n<p>caf\xe9</p>\r\n"), /not valid utf-8/],
    ["nesting 50 deep", nested(50), /nesting deeper than 20/],
  ];
  for (const [what, msg, reason] of cases) {
    test(`${what}`, async () => {
      const r = await rewriteHtmlParts(msg, mark);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason).toMatch(reason);
      expect(r.body.equals(msg)).toBe(true);
    });
  }

  test("an HTML part over the size limit", async () => {
    const msg = crlf("Content-Type: text/html", "", `<p>${"x".repeat(2000)}</p>`, "");
    const r = await rewriteHtmlParts(msg, mark, { maxPartBytes: 1000 });
    expect(r).toEqual({ ok: false, body: msg, reason: "an HTML part is over 1000 bytes" });
  });

  test("nesting within the limit is rewritten", async () => {
    expect(ok(await rewriteHtmlParts(nested(19), mark)).changedParts).toBe(1);
  });

  test("a transform that throws", async () => {
    const r = await rewriteHtmlParts(ALTERNATIVE, () => {
      throw new Error("boom");
    });
    expect(r).toEqual({ ok: false, body: ALTERNATIVE, reason: "rewriting failed: boom" });
  });
});

/** An HTML part under `depth` multiparts, each inside the one before. */
function nested(depth: number): Buffer {
  let inner = "Content-Type: text/html\r\n\r\n<p>deep</p>";
  for (let i = depth - 1; i >= 0; i--) inner = `Content-Type: multipart/mixed; boundary="n${i}"\r\n\r\n--n${i}\r\n${inner}\r\n--n${i}--`;
  return Buffer.from(`Subject: deep\r\n${inner}\r\n`);
}

function jis(text: string): Buffer {
  // encoding-japanese through charset.ts's twin: the test writes the fixture, the code under test reads it
  return Buffer.from(require("encoding-japanese").convert(text, { to: "JIS", from: "UNICODE", type: "array" }));
}

function unjis(b: Buffer): string {
  return require("encoding-japanese").convert(b, { to: "UNICODE", from: "JIS", type: "string" });
}
