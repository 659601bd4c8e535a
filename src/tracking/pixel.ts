/**
 * @module tracking/pixel — the open pixel: a 1×1 image at the recipient's `{public_url}/t/o/{token}`, put
 * before `</body>` of each HTML part (the HTML pass itself is tracking/links.ts).
 */
import { escapeAttribute } from "entities";
import { trackHtml } from "./links.ts";

/** The pixel's markup. Sized by attributes and style alike, so no client shows more than a dot. */
export function openPixel(url: string): string {
  return `<img src="${escapeAttribute(url)}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">`;
}

/** Puts the pixel before the first `</body>` of `html`, or at its end when there is none. */
export function addOpenPixel(html: string, url: string): string {
  return trackHtml(html, { pixel: openPixel(url), trackedPrefix: "" }).html;
}
