/**
 * @module tracking/token — the signed tokens in click, open and unsubscribe links (pure).
 *
 * A token names one recipient of one message: the message id and the recipient id's 20 base32 characters,
 * then, for a click, the link's index and its URL (base64url), so the redirect target comes from signed bytes and
 * no per-message link list is kept. It ends with 16 bytes (128 bits) of HMAC-SHA256 over everything before it,
 * base64url: 22 characters. Each kind has its own key derived from the instance secret (mail/keys.ts), so an open
 * token is no unsubscribe token, and neither is a VERP return path.
 *
 *   open, unsubscribe   {message id: 20}{recipient: 20}{mac: 22}                      62 characters
 *   click               {message id: 20}{recipient: 20}{index}.{url: base64url}.{mac: 22}
 *
 * Every character is URL-safe (RFC 3986 unreserved). The MAC covers the token's own text, not its decoded
 * values, so a token that differs from one we made in any character, however it would decode, does not verify;
 * it is compared in constant time. Tokens do not expire: a link in an old mail keeps working until the instance
 * secret (data_dir/secret) is replaced, which invalidates every token issued before.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { MESSAGE_ID, RECIPIENT_ID_BODY, type MessageId, type RecipientId } from "../mail/ids.ts";
import { derivedKey } from "../mail/keys.ts";

/** Longest URL a click token carries (characters): the token is 4/3 of it, and the link must fit a request line. */
export const MAX_TRACKED_URL = 4096;
/** Most links one message may have tracked */
export const MAX_LINK_INDEX = 999_999;

const MAC_BYTES = 16;
const B32 = "[0-9abcdefghjkmnpqrstvwxyz]{20}";
const B64 = "[A-Za-z0-9_-]";
const PAIR_TOKEN = new RegExp(`^(${B32})(${B32})(${B64}{22})$`);
const CLICK_TOKEN = new RegExp(`^((${B32})(${B32})(0|[1-9][0-9]{0,5})\\.(${B64}+))\\.(${B64}{22})$`);

export interface TrackedRecipient {
  messageId: MessageId;
  recipientId: RecipientId;
}

export interface TrackedClick extends TrackedRecipient {
  /** the link's place among the message's tracked links, from 0 */
  index: number;
  /** the link's target as the message had it */
  url: string;
}

/**
 * Where a click may send its browser: the URL itself when it is plain printable ASCII, its normalised form
 * (percent-encoded, IDNA host) when it has spaces or non-ASCII characters; null for anything but an absolute
 * `http://` or `https://` URL with a host, or one with control characters (CR and LF included). Checked when a
 * token is made and again before redirecting, so no signed token can turn outpost into an open redirector to a
 * `javascript:`, `data:` or scheme-relative `//host` URL, nor put a line break into a `Location` header.
 */
export function redirectTarget(url: string): string | null {
  // every recipient's copy of a message asks about the same links, twice each (trackingUrls, then click)
  const known = targets.get(url);
  if (known !== undefined) return known;
  const target = checkedTarget(url);
  if (targets.size >= TARGETS_KEPT) targets.delete(targets.keys().next().value!);
  targets.set(url, target);
  return target;
}

const TARGETS_KEPT = 1000;
const targets = new Map<string, string | null>();

function checkedTarget(url: string): string | null {
  if (url.length > MAX_TRACKED_URL || /[\x00-\x1f\x7f]/.test(url) || !/^https?:\/\//i.test(url)) return null;
  const parsed = URL.parse(url);
  if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:") || parsed.hostname === "") return null;
  return /^[\x21-\x7e]+$/.test(url) ? url : parsed.href;
}

export class TrackingTokens {
  private keys: Record<"click" | "open" | "unsubscribe", Buffer>;

  constructor(secret: Buffer) {
    this.keys = { click: derivedKey(secret, "click"), open: derivedKey(secret, "open"), unsubscribe: derivedKey(secret, "unsubscribe") };
  }

  /** Throws RangeError for a URL that redirectTarget refuses (leave such a link untracked) or an index out of range. */
  click(messageId: MessageId, recipientId: RecipientId, index: number, url: string): string {
    if (!Number.isInteger(index) || index < 0 || index > MAX_LINK_INDEX) throw new RangeError(`link index ${index} is out of range`);
    if (redirectTarget(url) === null) throw new RangeError(`not a trackable http(s) URL: ${JSON.stringify(url.slice(0, 100))}`);
    const signed = `${pair(messageId, recipientId)}${index}.${Buffer.from(url, "utf8").toString("base64url")}`;
    return `${signed}.${this.mac("click", signed)}`;
  }

  open(messageId: MessageId, recipientId: RecipientId): string {
    return this.pairToken("open", messageId, recipientId);
  }

  unsubscribe(messageId: MessageId, recipientId: RecipientId): string {
    return this.pairToken("unsubscribe", messageId, recipientId);
  }

  /** What a click token names, or null when we did not make it (forged, altered, truncated, another kind). */
  verifyClick(token: string): TrackedClick | null {
    const m = CLICK_TOKEN.exec(token);
    if (!m) return null;
    const [, signed, mid, rid, index, url64, mac] = m as unknown as [string, string, string, string, string, string, string];
    if (!this.matches("click", signed, mac)) return null;
    return { ...named(mid, rid), index: Number(index), url: Buffer.from(url64, "base64url").toString("utf8") };
  }

  verifyOpen(token: string): TrackedRecipient | null {
    return this.verifyPair("open", token);
  }

  verifyUnsubscribe(token: string): TrackedRecipient | null {
    return this.verifyPair("unsubscribe", token);
  }

  private pairToken(kind: "open" | "unsubscribe", messageId: MessageId, recipientId: RecipientId): string {
    const signed = pair(messageId, recipientId);
    return signed + this.mac(kind, signed);
  }

  private verifyPair(kind: "open" | "unsubscribe", token: string): TrackedRecipient | null {
    const m = PAIR_TOKEN.exec(token);
    if (!m) return null;
    const [, mid, rid, mac] = m as unknown as [string, string, string, string];
    return this.matches(kind, mid + rid, mac) ? named(mid, rid) : null;
  }

  private mac(kind: keyof TrackingTokens["keys"], text: string): string {
    return createHmac("sha256", this.keys[kind]).update(text).digest().subarray(0, MAC_BYTES).toString("base64url");
  }

  /** Both sides are 22 ASCII characters (the patterns say so), as timingSafeEqual needs. */
  private matches(kind: keyof TrackingTokens["keys"], text: string, given: string): boolean {
    return timingSafeEqual(Buffer.from(given, "latin1"), Buffer.from(this.mac(kind, text), "latin1"));
  }
}

function pair(messageId: MessageId, recipientId: RecipientId): string {
  const body = RECIPIENT_ID_BODY.exec(recipientId)?.[1];
  if (!MESSAGE_ID.test(messageId) || !body) throw new TypeError(`not a message and recipient id: ${messageId} ${recipientId}`);
  return messageId + body;
}

function named(mid: string, rid: string): TrackedRecipient {
  return { messageId: mid as MessageId, recipientId: `r${rid}` as RecipientId };
}

/** The links of one recipient's copy of a message. */
export interface TrackingUrls {
  /**
   * `{public_url}/t/c/{token}` for link `index` of the message. A URL no click could redirect to (redirectTarget:
   * control characters, longer than MAX_TRACKED_URL, no host) comes back unchanged: that link stays untracked,
   * and the rest of the message is tracked as usual.
   */
  click(url: string, index: number): string;
  /** `{public_url}/t/o/{token}`: the pixel */
  open: string;
  /** `{public_url}/t/u/{token}`: the one-click unsubscribe URL (RFC 8058) */
  unsubscribe: string;
  /** `{public_url}/t/c/`: a link that starts with it is tracked already */
  clickPrefix: string;
}

/** `publicUrl` is http.public_url; it must not be empty (intake refuses tracking without one). */
export function trackingUrls(publicUrl: string, tokens: TrackingTokens, m: MessageId, r: RecipientId): TrackingUrls {
  const base = publicUrl.replace(/\/+$/, "");
  if (base === "") throw new Error("tracking links need http.public_url");
  return {
    click: (url, index) => (redirectTarget(url) === null ? url : `${base}/t/c/${tokens.click(m, r, index, url)}`),
    open: `${base}/t/o/${tokens.open(m, r)}`,
    unsubscribe: `${base}/t/u/${tokens.unsubscribe(m, r)}`,
    clickPrefix: `${base}/t/c/`,
  };
}
