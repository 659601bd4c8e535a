/**
 * @module tracking/links — one HTMLRewriter pass over one HTML part: every http(s) link of an `<a href>`
 * through the click tracker, and the open pixel put before `</body>`; done once per message as a template
 * with a hole per link and for the pixel, filled for each recipient.
 *
 * Left as they are: mailto:, tel:, #anchors, relative and protocol-relative URLs, javascript:/data: and any
 * other scheme, links already pointing at the tracker, and links marked `data-notrack` (the attribute is
 * removed on the way out). Conditional comments (`<!--[if mso]>…<![endif]-->`) are comments to the parser,
 * so the VML buttons inside them keep their links: Outlook's button and the HTML one beside it are the same
 * link, and only the HTML one is counted.
 */
import { decodeHTMLAttribute, escapeAttribute } from "entities";
import type { HtmlTemplate } from "../message/parts.ts";

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

/** A place in a tracked HTML part that is different for each recipient. */
export type TrackingHole = { kind: "link"; url: string; index: number } | { kind: "pixel" };

export interface TrackingPlan {
  clicks: boolean;
  pixel: boolean;
  /** links whose URL starts with this are tracked already: `{public_url}/t/c/` */
  trackedPrefix: string;
  /** the index of this part's first link (links counted on from the message's earlier parts) */
  firstIndex?: number;
}

/**
 * The part as every recipient gets it, with holes where each one's link URLs and pixel go: the one HTMLRewriter
 * pass a message needs, however many recipients it has. `links` counts the link holes.
 */
export function trackingTemplate(html: string, plan: TrackingPlan): HtmlTemplate<TrackingHole> & { links: number } {
  const mark = markerFor(html);
  const holes: TrackingHole[] = [];
  const hole = (h: TrackingHole) => `${mark}${holes.push(h) - 1}${mark}`;
  let index = plan.firstIndex ?? 0;
  let pixelPlaced = !plan.pixel;
  const rewriter = new HTMLRewriter();
  if (plan.clicks) {
    rewriter.on("a", {
      element(a) {
        if (a.hasAttribute("data-notrack")) {
          a.removeAttribute("data-notrack");
          return;
        }
        const href = a.getAttribute("href");
        if (href === null) return;
        // lol-html gives the attribute as written: entities decoded here, escaped again when the hole is filled
        const url = decodeHTMLAttribute(href).replace(EDGE_SPACE, "");
        if (!HTTP.test(url) || url.startsWith(plan.trackedPrefix)) return;
        a.setAttribute("href", hole({ kind: "link", url, index: index++ }));
      },
    });
  }
  if (plan.pixel) {
    const place = (put: (html: string) => void) => {
      if (pixelPlaced) return;
      put(hole({ kind: "pixel" }));
      pixelPlaced = true;
    };
    rewriter.on("body", { element: (body) => body.onEndTag((end) => place((h) => end.before(h, { html: true }))) });
    rewriter.onDocument({ end: (end) => place((h) => end.append(h, { html: true })) });
  }
  // "piece mark n mark piece …": the numbers say which hole, since a link after </body> comes after the pixel
  const split = rewriter.transform(html).split(mark);
  return {
    pieces: split.filter((_s, i) => i % 2 === 0),
    holes: split.filter((_s, i) => i % 2 === 1).map((n) => holes[Number(n)]!),
    links: index - (plan.firstIndex ?? 0),
  };
}

/** What fills a hole for one recipient: the tracked URL, escaped for the attribute, or the pixel's markup. */
export function trackingFill(clickUrl: ClickUrl | undefined, pixel: string | undefined): (hole: TrackingHole) => string {
  return (hole) => (hole.kind === "link" ? escapeAttribute(clickUrl!(hole.url, hole.index)) : pixel!);
}

/** A character of Unicode's private use area that the HTML does not contain, to mark the holes with. */
function markerFor(html: string): string {
  let c = 0xe000;
  while (html.includes(String.fromCharCode(c))) c++;
  return String.fromCharCode(c);
}

/** Rewrites one HTML document for one recipient; `links` is how many links now go through the tracker. */
export function trackHtml(html: string, opts: HtmlTracking): { html: string; links: number } {
  const plan = { clicks: opts.clickUrl !== undefined, pixel: opts.pixel !== undefined, trackedPrefix: opts.trackedPrefix, firstIndex: opts.firstIndex };
  const t = trackingTemplate(html, plan);
  const fill = trackingFill(opts.clickUrl, opts.pixel);
  return { html: t.pieces.map((p, i) => (i < t.holes.length ? p + fill(t.holes[i]!) : p)).join(""), links: t.links };
}

/** Only the links: `trackHtml` without a pixel. */
export function rewriteLinks(html: string, clickUrl: ClickUrl, trackedPrefix: string): string {
  return trackHtml(html, { clickUrl, trackedPrefix }).html;
}
