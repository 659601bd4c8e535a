/**
 * @module tracking/links — one HTMLRewriter pass over one HTML part for one recipient: every http(s) link of
 * an `<a href>` through the click tracker, and the open pixel put before `</body>`.
 *
 * Left as they are: mailto:, tel:, #anchors, relative and protocol-relative URLs, javascript:/data: and any
 * other scheme, links already pointing at the tracker, and links marked `data-notrack` (the attribute is
 * removed on the way out). Conditional comments (`<!--[if mso]>…<![endif]-->`) are comments to the parser,
 * so the VML buttons inside them keep their links: Outlook's button and the HTML one beside it are the same
 * link, and only the HTML one is counted.
 */
import { decodeHTMLAttribute, escapeAttribute } from "entities";

/** The tracked URL for a link's URL (entities decoded: `?a=1&b=2`) and its index among the rewritten links. */
export type ClickUrl = (url: string, index: number) => string;

export interface HtmlTracking {
  /** absent: links stay as they are, `data-notrack` included */
  clickUrl?: ClickUrl;
  /** links whose URL starts with this are tracked already: `{public_url}/t/c/` */
  trackedPrefix: string;
  /** markup put before the first `</body>`, or at the end of a part that has none */
  pixel?: string;
  /** the index of this part's first rewritten link (links counted on from the message's earlier parts) */
  firstIndex?: number;
}

/** HTML's whitespace, which a browser strips from both ends of a URL attribute */
const EDGE_SPACE = /^[\t\n\f\r ]+|[\t\n\f\r ]+$/g;
const HTTP = /^https?:\/\//i;

/** Rewrites one HTML document; `links` is how many links now go through the tracker. */
export function trackHtml(html: string, opts: HtmlTracking): { html: string; links: number } {
  let index = opts.firstIndex ?? 0;
  let pixelPlaced = opts.pixel === undefined;
  const rewriter = new HTMLRewriter();
  if (opts.clickUrl) {
    const clickUrl = opts.clickUrl;
    rewriter.on("a", {
      element(a) {
        if (a.hasAttribute("data-notrack")) {
          a.removeAttribute("data-notrack");
          return;
        }
        const href = a.getAttribute("href");
        if (href === null) return;
        // lol-html gives the attribute as written: entities decoded here, escaped again on the way out
        const url = decodeHTMLAttribute(href).replace(EDGE_SPACE, "");
        if (!HTTP.test(url) || url.startsWith(opts.trackedPrefix)) return;
        a.setAttribute("href", escapeAttribute(clickUrl(url, index++)));
      },
    });
  }
  if (opts.pixel !== undefined) {
    const pixel = opts.pixel;
    rewriter.on("body", {
      element(body) {
        body.onEndTag((end) => {
          if (pixelPlaced) return;
          end.before(pixel, { html: true });
          pixelPlaced = true;
        });
      },
    });
    rewriter.onDocument({
      end(end) {
        if (!pixelPlaced) end.append(pixel, { html: true });
      },
    });
  }
  const out = rewriter.transform(html);
  return { html: out, links: index - (opts.firstIndex ?? 0) };
}

/** Only the links: `trackHtml` without a pixel. */
export function rewriteLinks(html: string, clickUrl: ClickUrl, trackedPrefix: string): string {
  return trackHtml(html, { clickUrl, trackedPrefix }).html;
}
