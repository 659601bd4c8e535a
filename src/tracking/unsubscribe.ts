/**
 * @module tracking/unsubscribe — the List-Unsubscribe fields of one recipient's copy (pure): RFC 2369's
 * `List-Unsubscribe: <{public_url}/t/u/{token}>` and RFC 8058's `List-Unsubscribe-Post: List-Unsubscribe=One-Click`,
 * which lets a mail provider's "unsubscribe" button POST to that URL without opening a page.
 *
 * The message's own List-Unsubscribe fields are merged, not added to (a second field would leave a reader's
 * program to pick one): its `mailto:` URIs are kept after ours, so unsubscribe requests by mail still reach the
 * sender; its http(s) URIs are dropped, since RFC 8058 §3.1 wants exactly one HTTPS URI, ours, whose POST
 * suppresses the address and tells the sender (the `unsubscribed` event). The sender's own
 * List-Unsubscribe-Post goes with its URI. RFC 8058 one-click needs HTTPS: with an `http://` public_url the
 * List-Unsubscribe-Post field is left out (a provider would ignore it) and only the link remains.
 */
import { joinMessage, removeHeaders, splitMessage, type SplitMessage } from "../message/headers.ts";

export const UNSUBSCRIBE_FIELDS = ["List-Unsubscribe", "List-Unsubscribe-Post"] as const;

/** What to do to the header block: take out its own fields named in `remove`, then append `add`. */
export interface UnsubscribeFields {
  remove: readonly string[];
  /** complete header fields, "Name: value\r\n", folded between URIs */
  add: string[];
}

/**
 * The fields for `headerBlock` (the message's header section, or the whole message: reading stops at the first
 * blank line) and this recipient's unsubscribe URL (trackingUrls().unsubscribe).
 */
export function listUnsubscribeFields(headerBlock: string | Buffer, unsubscribeUrl: string): UnsubscribeFields {
  if (!/^https?:\/\/[\x21-\x7e]+$/i.test(unsubscribeUrl) || /[<>,]/.test(unsubscribeUrl)) {
    throw new RangeError(`not an unsubscribe URL: ${JSON.stringify(unsubscribeUrl)}`);
  }
  const head = typeof headerBlock === "string" ? Buffer.from(headerBlock, "latin1") : headerBlock;
  const mailtos = sendersMailtos(splitMessage(withBlankLine(head)));
  const uris = [unsubscribeUrl, ...mailtos].map((u) => `<${u}>`).join(",\r\n ");
  const add = [`List-Unsubscribe: ${uris}\r\n`];
  if (/^https:/i.test(unsubscribeUrl)) add.push("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
  return { remove: UNSUBSCRIBE_FIELDS, add };
}

/** The whole message with its List-Unsubscribe fields replaced by this recipient's; every other byte kept. */
export function withListUnsubscribe(message: Buffer, unsubscribeUrl: string): Buffer {
  const fields = listUnsubscribeFields(message, unsubscribeUrl);
  const m = removeHeaders(splitMessage(message), [...fields.remove]);
  const added = fields.add.map((raw) => ({ name: raw.slice(0, raw.indexOf(":")), key: raw.slice(0, raw.indexOf(":")).toLowerCase(), raw }));
  return joinMessage({ headers: [...m.headers, ...added], body: m.body });
}

/** Every `<mailto:…>` in the message's List-Unsubscribe fields, once each, internal whitespace removed (RFC 2369 §2). */
function sendersMailtos(m: SplitMessage): string[] {
  const out: string[] = [];
  for (const field of m.headers.filter((h) => h.key === "list-unsubscribe")) {
    const value = field.raw.slice(field.raw.indexOf(":") + 1);
    for (const [, uri] of value.matchAll(/<([^>]*)>/g)) {
      const clean = uri!.replace(/\s+/g, "");
      if (/^mailto:/i.test(clean) && !/[<>\x00-\x1f\x7f]/.test(clean) && !out.includes(clean)) out.push(clean);
    }
  }
  return out;
}

/** splitMessage reads a header block only up to a blank line; a bare block gets one. */
function withBlankLine(head: Buffer): Buffer {
  return head.includes("\r\n\r\n") ? head : Buffer.concat([head, Buffer.from(head.subarray(-2).toString() === "\r\n" ? "\r\n" : "\r\n\r\n")]);
}
