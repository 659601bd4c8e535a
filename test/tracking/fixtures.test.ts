/**
 * Newsletter-like messages (test/fixtures/html/) personalised for one recipient, then read back with mailparser:
 * attachments and text parts byte for byte, the HTML the same but for its tracked links and the pixel.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decodeHTMLAttribute, escapeAttribute } from "entities";
import { simpleParser, type ParsedMail } from "mailparser";
import { rewriteHtmlParts } from "../../src/message/parts.ts";
import { personalizeHtml } from "../../src/tracking/html.ts";
import { trackHtml } from "../../src/tracking/links.ts";
import { openPixel } from "../../src/tracking/pixel.ts";

const DIR = join(import.meta.dir, "../fixtures/html");
const BOUNCES = join(import.meta.dir, "../fixtures/bounces");
const PREFIX = "https://out.example/t/c/";
const OPEN = "https://out.example/t/o/open-token";
const load = (name: string) => readFileSync(join(DIR, name));

/** the tracked URL carries its index and the original URL, so a test can undo it */
const clickUrl = (url: string, i: number) => `${PREFIX}${i}?u=${encodeURIComponent(url)}`;
const TRACKED = new RegExp(`href="${PREFIX.replace(/[.]/g, "\\.")}(\\d+)\\?u=([^"]*)"`, "g");

/** The HTML as it was: tracked links back to their (escaped) originals, the pixel taken out. */
function untrack(html: string): string {
  return html
    .replaceAll(openPixel(OPEN), "")
    .replace(TRACKED, (_all, _i, u: string) => `href="${escapeAttribute(decodeURIComponent(decodeHTMLAttribute(u)))}"`);
}

/**
 * `textPart`: the message has a text/plain part (without one, mailparser makes its text from the HTML);
 * `htmlEnd`: the delimiter line after the HTML part (none: the part runs to the end of the message)
 */
const GOOD: { file: string; links: number; kept: string; textPart: boolean; htmlEnd?: string }[] = [
  { file: "01-related-alternative.eml", links: 60, kept: "naïve fisherman", textPart: true, htmlEnd: "\r\n--alt-0003--\r\n" },
  { file: "02-latin1-qp.eml", links: 60, kept: "<title>Grüße · The Weekly Harbour - Issue 142</title>", textPart: true, htmlEnd: "\r\n--=_latin1--\r\n" },
  { file: "03-base64-html.eml", links: 60, kept: "Tickets from 12 €", textPart: false },
  { file: "04-iso-2022-jp.eml", links: 1, kept: "港だより 第142号", textPart: true, htmlEnd: "\r\n--jp--\r\n" },
  { file: "05-shift-jis-base64.eml", links: 1, kept: "灯台めぐり", textPart: false },
  { file: "06-windows-1252-8bit.eml", links: 1, kept: "“Smart quotes” – 12 €", textPart: false },
];

async function personalized(msg: Buffer): Promise<{ body: Buffer; urls: string[]; changedParts: number }> {
  const urls: string[] = [];
  const r = await personalizeHtml(msg, { clickUrl: (u, i) => (urls.push(u), clickUrl(u, i)), openUrl: OPEN, trackedPrefix: PREFIX });
  if (!r.ok) throw new Error(r.reason);
  return { body: r.body, urls, changedParts: r.changedParts };
}

function expectSameAttachments(a: ParsedMail, b: ParsedMail): void {
  const view = (m: ParsedMail) => m.attachments.map((x) => ({ type: x.contentType, name: x.filename, cid: x.cid, disposition: x.contentDisposition, content: x.content.toString("base64") }));
  expect(view(b)).toEqual(view(a));
}

const head = (b: Buffer) => b.subarray(0, b.indexOf("\r\n\r\n"));

describe("newsletter fixtures, personalised", () => {
  for (const { file, links, kept, textPart } of GOOD) {
    test(`${file}: ${links} links tracked, pixel added; headers, text parts and attachments unchanged (mailparser)`, async () => {
      const msg = load(file);
      const { body, urls, changedParts } = await personalized(msg);
      expect(changedParts).toBe(1);
      expect(urls.length).toBe(links);
      expect(head(body).equals(head(msg))).toBe(true);
      const [before, after] = await Promise.all([simpleParser(msg), simpleParser(body)]);
      expectSameAttachments(before, after);
      if (textPart) expect(after.text).toBe(before.text);
      const html = after.html as string;
      expect(html).toContain(kept);
      expect(html.split(openPixel(OPEN)).length - 1).toBe(1);
      expect([...html.matchAll(TRACKED)].map((m) => Number(m[1]))).toEqual(urls.map((_u, i) => i));
      expect(untrack(html)).toBe((before.html as string).replace(" data-notrack", ""));
    });
  }

  test("every byte outside the HTML part's body is the same: headers, text parts, boundaries, attachments", async () => {
    for (const { file, htmlEnd } of GOOD) {
      const msg = load(file);
      const { body } = await personalized(msg);
      const start = msg.indexOf("\r\n\r\n", msg.indexOf("text/html")) + 4;
      const end = htmlEnd ? msg.indexOf(htmlEnd, start) : msg.length;
      let prefix = 0;
      while (prefix < msg.length && msg[prefix] === body[prefix]) prefix++;
      let suffix = 0;
      while (suffix < msg.length && msg[msg.length - 1 - suffix] === body[body.length - 1 - suffix]) suffix++;
      expect([file, prefix >= start, msg.length - suffix <= end]).toEqual([file, true, true]);
    }
  });

  test("a transform that changes nothing gives every fixture back byte for byte", async () => {
    for (const { file } of GOOD) {
      const msg = load(file);
      const r = await rewriteHtmlParts(msg, (h) => h);
      expect([file, r.ok, r.body.equals(msg)]).toEqual([file, true, true]);
    }
  });

  test("the newsletter's links: query strings with &amp; arrive decoded; mailto, tel, #top, relative, javascript:, data-notrack, already tracked and the VML buttons stay", async () => {
    const msg = load("03-base64-html.eml");
    const { body, urls } = await personalized(msg);
    expect(urls).toContain("https://harbour.example/stories/story-1?utm_source=newsletter&utm_medium=email&utm_campaign=issue-142");
    expect(urls).toContain("https://maps.example/?q=Kai+4%2C+Hamburg&z=16");
    expect(urls.filter((u) => /unsubscribe|already-tracked/.test(u))).toEqual([]);
    const html = (await simpleParser(body)).html as string;
    for (const untouched of [
      'href="mailto:letters@harbour.example?subject=Issue%20142&amp;body=Hello"',
      'href="tel:+4940123456"',
      'href="#top"',
      'href="/archive"',
      'href="javascript:void(0)"',
      'href="https://out.example/t/c/already-tracked-token"',
      '<a href="https://harbour.example/unsubscribe?list=weekly&amp;id=abc123" style=',
      'href="https://harbour.example/stories/story-12?utm_source=newsletter&amp;utm_medium=email&amp;utm_content=button" style="height:40px;',
    ]) expect(html).toContain(untouched);
    expect(html).not.toContain("data-notrack");
  });

  test("the attached message (message/rfc822) keeps its own HTML and its links untracked", async () => {
    const msg = load("01-related-alternative.eml");
    const after = await simpleParser((await personalized(msg)).body);
    const forwarded = after.attachments.find((a) => a.contentType === "message/rfc822")!;
    expect(forwarded.content.toString()).toContain('<a href="https://port.example/berths?day=tue&amp;x=1">Details</a>');
    expect(after.attachments.map((a) => a.contentType).sort()).toEqual(["application/pdf", "image/png", "message/rfc822"]);
  });

  test("ISO-8859-1 stays ISO-8859-1 and quoted-printable; ISO-2022-JP stays 7bit", async () => {
    const latin = (await personalized(load("02-latin1-qp.eml"))).body.toString("latin1");
    expect(latin).toContain("Content-Type: text/html; charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    expect(latin).toContain("<title>Gr=FC=DFe");
    const jp = (await personalized(load("04-iso-2022-jp.eml"))).body;
    expect(jp.toString("latin1")).toContain("Content-Type: text/html; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    expect(jp.some((b) => b > 0x7f)).toBe(false);
  });

  test("base64 HTML keeps its line length (76 and 72)", async () => {
    for (const [file, width] of [["03-base64-html.eml", 76], ["05-shift-jis-base64.eml", 72]] as const) {
      const body = (await personalized(load(file))).body.toString();
      const lines = body.slice(body.indexOf("\r\n\r\n") + 4).split("\r\n").filter((l) => l);
      expect(lines.slice(0, -1).every((l) => l.length === width)).toBe(true);
    }
  });
});

describe("malformed MIME comes back unchanged with a reason", () => {
  const EXPECTED: Record<string, RegExp> = {
    "missing-closing-boundary.eml": /^multipart\/alternative without its closing boundary$/,
    "invalid-base64.eml": /^HTML part 0: invalid base64$/,
    "nested-50-deep.eml": /^MIME nesting deeper than 20$/,
    "multipart-without-boundary.eml": /^multipart\/mixed without a usable boundary$/,
    "unknown-charset.eml": /^HTML part 0: charset "x-mac-klingon" is not supported$/,
    "truncated-in-base64.eml": /^HTML part 0: invalid base64$/,
  };

  test("every malformed sample has its expectation", () => {
    expect(readdirSync(join(DIR, "malformed")).sort()).toEqual(Object.keys(EXPECTED).sort());
  });

  for (const [file, reason] of Object.entries(EXPECTED)) {
    test(file, async () => {
      const msg = load(join("malformed", file));
      const r = await personalizeHtml(msg, { clickUrl, openUrl: OPEN, trackedPrefix: PREFIX });
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason).toMatch(reason);
      expect(r.body.equals(msg)).toBe(true);
    });
  }
});

describe("real-world mail (the bounce corpus) through the rewriter", () => {
  const files = readdirSync(BOUNCES).filter((f) => f.endsWith(".eml"));

  test("never throws; what it rewrites keeps its attachments and text parts, what it refuses comes back unchanged", async () => {
    let rewritten = 0;
    for (const file of files) {
      const msg = readFileSync(join(BOUNCES, file));
      const r = await rewriteHtmlParts(msg, (html) => trackHtml(html, { clickUrl, trackedPrefix: PREFIX, pixel: openPixel(OPEN) }).html);
      if (!r.ok) {
        expect([file, r.body.equals(msg)]).toEqual([file, true]);
        continue;
      }
      if (r.changedParts === 0) {
        expect([file, r.body.equals(msg)]).toEqual([file, true]);
        continue;
      }
      rewritten++;
      const [before, after] = await Promise.all([simpleParser(msg), simpleParser(r.body)]);
      expectSameAttachments(before, after);
      expect([file, after.text]).toEqual([file, before.text]);
    }
    expect(rewritten).toBeGreaterThan(0);
  });
});
