/**
 * @module tracking/html — one recipient's copy of a message: its HTML parts with tracked links and the open
 * pixel, both in one pass over each part, everything else byte for byte (message/parts.ts). A message that
 * cannot be rewritten comes back unchanged with the reason: it goes out untracked, never lost.
 */
import { compileHtmlParts, type RewriteLimits, type RewriteResult } from "../message/parts.ts";
import { trackingFill, trackingTemplate, type ClickUrl, type TrackingHole } from "./links.ts";
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

/**
 * Link indexes count across the message's HTML parts in MIME order, so each link of a message has its own. The
 * HTML pass and the encoding around the holes are done once per message (and remembered with its Buffer):
 * each further recipient costs the holes.
 */
export async function personalizeHtml(message: Buffer, opts: PersonalizeHtmlOptions): Promise<RewriteResult> {
  const clicks = opts.clickUrl !== undefined;
  const pixel = opts.openUrl !== undefined;
  if (!clicks && !pixel) return { ok: true, body: message, changedParts: 0 };
  let links = 0;
  const compiled = await compileHtmlParts<TrackingHole>(
    message,
    `tracking ${clicks} ${pixel} ${opts.trackedPrefix}`,
    (html) => {
      const t = trackingTemplate(html, { clicks, pixel, trackedPrefix: opts.trackedPrefix, firstIndex: links });
      links += t.links;
      return t;
    },
    opts.limits,
  );
  if (!compiled.ok) return { ok: false, body: message, reason: compiled.reason };
  return compiled.render(trackingFill(opts.clickUrl, pixel ? openPixel(opts.openUrl!) : undefined));
}
