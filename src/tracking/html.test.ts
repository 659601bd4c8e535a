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
});
