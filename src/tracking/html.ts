/**
 * @module tracking/html — one recipient's copy of a message: its HTML parts with tracked links and the open
 * pixel, both in one pass over each part, everything else byte for byte (message/parts.ts). A message that
 * cannot be rewritten comes back unchanged with the reason: it goes out untracked, never lost.
 */
import { rewriteHtmlParts, type RewriteLimits, type RewriteResult } from "../message/parts.ts";
import { trackHtml, type ClickUrl } from "./links.ts";
import { openPixel } from "./pixel.ts";

export interface PersonalizeHtmlOptions {
  /** the tracked URL for each link (clicktracking); absent: links stay */
  clickUrl?: ClickUrl;
  /** the pixel's URL (openstracking); absent: no pixel */
  openUrl?: string;
  /** `{public_url}/t/c/`: links already starting with it are not tracked again */
  trackedPrefix: string;
  limits?: RewriteLimits;
}

/** Link indexes count across the message's HTML parts in MIME order, so each link of a message has its own. */
export async function personalizeHtml(message: Buffer, opts: PersonalizeHtmlOptions): Promise<RewriteResult> {
  if (!opts.clickUrl && opts.openUrl === undefined) return { ok: true, body: message, changedParts: 0 };
  const pixel = opts.openUrl === undefined ? undefined : openPixel(opts.openUrl);
  let links = 0;
  return rewriteHtmlParts(
    message,
    (html) => {
      const out = trackHtml(html, { clickUrl: opts.clickUrl, trackedPrefix: opts.trackedPrefix, pixel, firstIndex: links });
      links += out.links;
      return out.html;
    },
    opts.limits,
  );
}
