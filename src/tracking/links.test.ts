import { describe, expect, test } from "bun:test";
import { rewriteLinks, trackHtml } from "./links.ts";
import { addOpenPixel, openPixel } from "./pixel.ts";

const PREFIX = "https://out.test/t/c/";
/** the tracked URL carries the original, so a test can read back what the callback was handed */
const click = (url: string, i: number) => `${PREFIX}${i}?u=${encodeURIComponent(url)}`;
const track = (html: string) => rewriteLinks(html, click, PREFIX);
const handed = (html: string): string[] => {
  const urls: string[] = [];
  rewriteLinks(html, (u) => (urls.push(u), "https://t.test/"), PREFIX);
  return urls;
};

describe("click links", () => {
  test("every http(s) link of an <a> goes through the tracker, numbered in document order", () => {
    expect(track('<a href="https://a.test/">A</a><p><A HREF="http://b.test/x">B</A></p>')).toBe(
      `<a href="${PREFIX}0?u=https%3A%2F%2Fa.test%2F">A</a><p><A HREF="${PREFIX}1?u=http%3A%2F%2Fb.test%2Fx">B</A></p>`,
    );
  });

  test("entities are decoded before the URL is handed over, and the new href is escaped", () => {
    expect(handed('<a href="https://a.test/?a=1&amp;b=2&#38;c=3&quot;">x</a>')).toEqual(['https://a.test/?a=1&b=2&c=3"']);
    const out = rewriteLinks('<a href="https://a.test/">x</a>', () => 'https://t.test/?a=1&b="2"', PREFIX);
    expect(out).toBe('<a href="https://t.test/?a=1&amp;b=&quot;2&quot;">x</a>');
  });

  test("a query string with &amp; survives the round trip through the tracker", () => {
    const original = "https://shop.test/item?id=7&ref=mail&amp;x";
    const [url] = handed(`<a href="${original.replace(/&/g, "&amp;")}">x</a>`);
    expect(url).toBe(original);
  });

  test("blanks around the URL are dropped and the scheme may be in any case", () => {
    expect(handed('<a href="  HTTPS://a.test/x \n">x</a>')).toEqual(["HTTPS://a.test/x"]);
  });

  test("mailto:, tel:, #anchors, relative, protocol-relative, javascript: and data: links are left as they are", () => {
    const html = [
      '<a href="mailto:a@b.test?subject=hi&amp;x">m</a>',
      '<a href="tel:+4930123">t</a>',
      '<a href="#top">a</a>',
      '<a href="/relative">r</a>',
      '<a href="//cdn.test/x">p</a>',
      '<a href="javascript:alert(1)">j</a>',
      '<a href="data:text/html,x">d</a>',
      '<a href="ftp://f.test/">f</a>',
      "<a name=anchor>n</a>",
    ].join("");
    expect(track(html)).toBe(html);
  });

  test("a link already pointing at the tracker is not tracked twice", () => {
    const html = `<a href="${PREFIX}abc">x</a>`;
    expect(track(html)).toBe(html);
  });

  test("data-notrack leaves the link alone and is removed on the way out", () => {
    expect(track('<a data-notrack href="https://a.test/?a=1&amp;b=2" class="c">x</a><a href="https://b.test/">y</a>')).toBe(
      `<a href="https://a.test/?a=1&amp;b=2" class="c">x</a><a href="${PREFIX}0?u=https%3A%2F%2Fb.test%2F">y</a>`,
    );
  });

  test("links inside conditional comments (Outlook's VML buttons) are left untouched", () => {
    const vml = '<!--[if mso]><v:roundrect href="https://a.test/"><a href="https://a.test/">x</a></v:roundrect><![endif]-->';
    expect(track(vml)).toBe(vml);
  });

  test("links in <area>, <link> and <img> are not <a> links", () => {
    const html = '<link rel="stylesheet" href="https://a.test/c.css"><area href="https://a.test/"><img src="https://a.test/i.png">';
    expect(track(html)).toBe(html);
  });

  test("the index goes on from firstIndex, and links counts this part's rewrites", () => {
    const out = trackHtml('<a href="https://a.test/">1</a><a href="mailto:x@y">m</a><a href="https://b.test/">2</a>', { clickUrl: click, trackedPrefix: PREFIX, firstIndex: 5 });
    expect(out.links).toBe(2);
    expect(out.html).toContain(`${PREFIX}5?`);
    expect(out.html).toContain(`${PREFIX}6?`);
  });

  test("without a click callback links and data-notrack stay as they are", () => {
    const html = '<a data-notrack href="https://a.test/">x</a>';
    expect(trackHtml(html, { trackedPrefix: PREFIX }).html).toBe(html);
  });
});

describe("open pixel", () => {
  const pixel = openPixel("https://out.test/t/o/tok?a=1&b=2");

  test("is a 1×1 image with an escaped src", () => {
    expect(pixel).toBe(
      '<img src="https://out.test/t/o/tok?a=1&amp;b=2" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">',
    );
  });

  test("goes before </body>, once", () => {
    expect(addOpenPixel("<html><body><p>x</p></body></html>", "https://out.test/t/o/tok?a=1&b=2")).toBe(`<html><body><p>x</p>${pixel}</body></html>`);
  });

  test("goes at the end of a part without </body>", () => {
    expect(addOpenPixel("<p>fragment</p>", "https://out.test/t/o/tok?a=1&b=2")).toBe(`<p>fragment</p>${pixel}`);
    expect(addOpenPixel("<body><p>open body", "https://out.test/t/o/tok?a=1&b=2")).toBe(`<body><p>open body${pixel}`);
  });

  test("a </body> inside a comment or a script is not the end of the body", () => {
    const html = "<body><!-- </body> --><script>var s = '</body>';</script><p>x</p></body>";
    expect(addOpenPixel(html, "https://out.test/t/o/tok?a=1&b=2")).toBe(`<body><!-- </body> --><script>var s = '</body>';</script><p>x</p>${pixel}</body>`);
  });
});
