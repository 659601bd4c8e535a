/**
 * @module message/inline-css — `inlinizecss`: the CSS of each HTML part's <style> blocks moved into style
 * attributes (juice), once per message at intake. What cannot be inlined stays in a <style> block: media
 * queries, @font-face, @keyframes, pseudo-classes such as :hover. Nothing is fetched: juice's browser build
 * has no resource loader, so a <link rel="stylesheet"> stays a link.
 */
import juice from "juice/client";
import { rewriteHtmlParts, type RewriteLimits, type RewriteResult } from "./parts.ts";

const OPTIONS: juice.Options = {
  applyStyleTags: true,
  removeStyleTags: true,
  preserveMediaQueries: true,
  preserveFontFaces: true,
  preserveKeyFrames: true,
  preservePseudos: true,
  preserveImportant: true,
  preserveContainerQueries: true,
  preserveLayers: true,
  insertPreservedExtraCss: true,
};

/** One HTML document with its CSS inlined. */
export function inlineCss(html: string): string {
  return juice(html, OPTIONS);
}

/** Every HTML part of a message with its CSS inlined; the rest byte for byte (message/parts.ts). */
export function inlineCssInMessage(message: Buffer, limits?: RewriteLimits): Promise<RewriteResult> {
  return rewriteHtmlParts(message, inlineCss, limits);
}
