import { describe, expect, test } from "bun:test";
import { personalizeHtml } from "./html.ts";

const PREFIX = "https://out.test/t/c/";
const MSG = Buffer.from(
  [
    'Content-Type: multipart/mixed; boundary="m"',
    "",
    "--m",
    'Content-Type: multipart/alternative; boundary="a"',
    "",
    "--a",
    "Content-Type: text/plain",
    "",
    "https://a.test/ in text stays",
    "--a",
    "Content-Type: text/html; charset=utf-8",
    "",
    '<html><body><a href="https://a.test/">a</a><a href="https://b.test/?x=1&amp;y=2">b</a></body></html>',
    "--a--",
    "--m",
    "Content-Type: text/html; charset=utf-8",
    "",
    '<p><a href="https://c.test/">c</a></p>',
    "--m--",
    "",
  ].join("\r\n"),
);

describe("personalizeHtml", () => {
  test("links and pixel in one pass; indexes go on across HTML parts; each HTML part gets the pixel", async () => {
    const urls: string[] = [];
    const r = await personalizeHtml(MSG, {
      clickUrl: (url, i) => (urls.push(`${i} ${url}`), `${PREFIX}tok${i}`),
      openUrl: "https://out.test/t/o/open",
      trackedPrefix: PREFIX,
    });
    expect(r.ok && r.changedParts).toBe(2);
    expect(urls).toEqual(["0 https://a.test/", "1 https://b.test/?x=1&y=2", "2 https://c.test/"]);
    const out = r.body.toString();
    expect(out).toContain(`<a href="${PREFIX}tok0">a</a><a href="${PREFIX}tok1">b</a><img src="https://out.test/t/o/open"`);
    expect(out).toContain(`<p><a href="${PREFIX}tok2">c</a></p><img src="https://out.test/t/o/open"`);
    expect(out).toContain("\r\n\r\nhttps://a.test/ in text stays\r\n--a\r\n");
  });

  test("the same message personalised for two recipients gives each their own links", async () => {
    const forRecipient = (who: string) => personalizeHtml(MSG, { clickUrl: (_u, i) => `${PREFIX}${who}-${i}`, trackedPrefix: PREFIX });
    const [ann, bob] = await Promise.all([forRecipient("ann"), forRecipient("bob")]);
    expect(ann.body.toString()).toContain(`${PREFIX}ann-2`);
    expect(bob.body.toString()).toContain(`${PREFIX}bob-2`);
    expect(bob.body.toString()).not.toContain("ann-");
  });

  test("with neither clicks nor opens the message is handed back as it is", async () => {
    expect(await personalizeHtml(MSG, { trackedPrefix: PREFIX })).toEqual({ ok: true, body: MSG, changedParts: 0 });
  });

  test("a message that cannot be rewritten goes out unchanged with the reason", async () => {
    const broken = Buffer.from(MSG.toString().replace("--m--\r\n", ""));
    const r = await personalizeHtml(broken, { openUrl: "https://out.test/t/o/x", trackedPrefix: PREFIX });
    expect(r).toEqual({ ok: false, body: broken, reason: "multipart/mixed without its closing boundary" });
  });

  test("quoted-printable copies keep lines within 76 and decode to the same HTML as a whole re-encoding", async () => {
    const html = `<html><body>${'<p>caf\u00e9 <a href="https://a.test/?q=1&amp;r=2">link</a></p>\r\n'.repeat(40)}</body></html>`;
    const msg = Buffer.from(`Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${qp(html)}\r\n`);
    const r = await personalizeHtml(msg, { clickUrl: (u, i) => `${PREFIX}${i}/${"x".repeat(90)}?u=${u}`, openUrl: "https://out.test/t/o/o?a=1", trackedPrefix: PREFIX });
    const body = r.body.subarray(r.body.indexOf("\r\n\r\n") + 4).toString("latin1");
    expect(Math.max(...body.split("\r\n").map((l) => l.length))).toBeLessThanOrEqual(76);
    const decoded = require("libqp").decode(body).toString("utf8");
    expect(decoded).toContain(`<a href="${PREFIX}39/${"x".repeat(90)}?u=https://a.test/?q=1&amp;r=2">link</a></p>\r\n<img src="https://out.test/t/o/o?a=1"`);
    expect(decoded.split("café").length - 1).toBe(40);
  });

  test("quoted-printable holes with nothing to escape (signed tokens) are only wrapped: lines within 76, the same URL decoded", async () => {
    const html = `<html><body>${'<p>caf\u00e9 <a href="https://a.test/x">link</a></p>\r\n'.repeat(5)}</body></html>`;
    const msg = Buffer.from(`Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${qp(html)}\r\n`);
    for (const length of [1, 74, 75, 76, 148, 149, 300]) {
      const url = (i: number) => `${PREFIX}${i}.${"t".repeat(length)}`;
      const r = await personalizeHtml(msg, { clickUrl: (_u, i) => url(i), trackedPrefix: PREFIX });
      const body = r.body.subarray(r.body.indexOf("\r\n\r\n") + 4).toString("latin1");
      expect(Math.max(...body.split("\r\n").map((l) => l.length))).toBeLessThanOrEqual(76);
      const decoded = require("libqp").decode(body).toString("utf8");
      for (let i = 0; i < 5; i++) expect(decoded).toContain(`<a href="${url(i)}">link</a>`);
    }
  });

  test("a tracked URL the part's charset cannot hold switches that part to UTF-8", async () => {
    const msg = Buffer.from("Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>caf\xe9 <a href=\"https://a.test/\">a</a></p>\r\n", "latin1");
    const r = await personalizeHtml(msg, { clickUrl: () => "https://t.test/€", trackedPrefix: PREFIX });
    expect(r.body.toString("utf8")).toBe('Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>café <a href="https://t.test/€">a</a></p>\r\n');
  });

  test("a link after </body> keeps its place and number; the pixel goes before </body>", async () => {
    const msg = Buffer.from('Content-Type: text/html\r\n\r\n<body><a href="https://a.test/">a</a></body><a href="https://b.test/">b</a>\r\n');
    const r = await personalizeHtml(msg, { clickUrl: (_u, i) => `${PREFIX}${i}`, openUrl: "https://out.test/t/o/p", trackedPrefix: PREFIX });
    expect(r.body.toString()).toContain(`<a href="${PREFIX}0">a</a><img src="https://out.test/t/o/p"`);
    expect(r.body.toString()).toContain(`</body><a href="${PREFIX}1">b</a>`);
  });

  test("a 7bit part whose tracked line passes 998 octets goes out quoted-printable", async () => {
    const msg = Buffer.from('Content-Type: text/html\r\n\r\n<p><a href="https://a.test/">a</a></p>\r\n');
    const r = await personalizeHtml(msg, { clickUrl: () => `${PREFIX}${"t".repeat(1200)}`, trackedPrefix: PREFIX });
    const out = r.body.toString();
    expect(out).toStartWith("Content-Transfer-Encoding: quoted-printable\r\nContent-Type: text/html\r\n\r\n");
    expect(Math.max(...out.split("\r\n").map((l) => l.length))).toBeLessThanOrEqual(76);
  });
});

function qp(text: string): string {
  const libqp = require("libqp");
  return libqp.wrap(libqp.encode(Buffer.from(text)), 76);
}
