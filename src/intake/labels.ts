/**
 * @module intake/labels — a message's `tag` and `metadata`: the sender's own labels, checked here whichever door
 * they came by (API fields, or SMTP's X-Outpost-Tag / X-Outpost-Metadata-KEY headers), stored with the message
 * and carried by each of its events, so a webhook can be matched to the application's records.
 */
import type { HeaderField } from "../message/headers.ts";
import { IntakeError } from "./policy.ts";

export const TAG_MAX = 100;
export const METADATA_MAX_KEYS = 20;
export const METADATA_KEY_MAX = 40;
export const METADATA_VALUE_MAX = 500;
const METADATA_KEY = /^[A-Za-z0-9_-]+$/;
const CONTROL = /[\x00-\x1f\x7f]/;

export const TAG_HEADER = "X-Outpost-Tag";
export const METADATA_HEADER_PREFIX = "X-Outpost-Metadata-";

export interface Labels {
  /** null: none */
  tag: string | null;
  /** empty: none */
  metadata: Record<string, string>;
}

/** Where a label came from: an error names the field, and over SMTP the header too. */
type Source = "field" | "header";

/** 554 5.6.0 over SMTP (the content is refused), 400 naming the field over HTTP. */
const refuse = (field: string, message: string) => new IntakeError(554, "5.6.0", message, 400, field);

/** The tag, trimmed; "" is no tag (Postmark-style clients send `"Tag": ""`). */
export function checkTag(value: string, source: Source = "field"): string | null {
  const tag = value.trim();
  const shown = source === "header" ? TAG_HEADER : "tag";
  if (CONTROL.test(tag)) throw refuse("tag", `${shown} must not contain control characters`);
  if (tag.length > TAG_MAX) throw refuse("tag", `${shown} is ${tag.length} characters long, at most ${TAG_MAX}`);
  return tag === "" ? null : tag;
}

/** One metadata entry; `field` is `metadata.KEY`. */
export function checkMetadataEntry(key: string, value: string, source: Source = "field"): void {
  const field = `metadata.${key}`;
  const shown = source === "header" ? `${METADATA_HEADER_PREFIX}${key}` : field;
  if (!METADATA_KEY.test(key) || key.length > METADATA_KEY_MAX) {
    throw refuse(field, `${shown}: a metadata key is 1 to ${METADATA_KEY_MAX} characters of A-Z, a-z, 0-9, _ and -`);
  }
  if (value.length > METADATA_VALUE_MAX) throw refuse(field, `${shown} is ${value.length} characters long, at most ${METADATA_VALUE_MAX}`);
}

export function checkMetadataSize(metadata: Record<string, string>): void {
  const n = Object.keys(metadata).length;
  if (n > METADATA_MAX_KEYS) throw refuse("metadata", `metadata has ${n} keys, at most ${METADATA_MAX_KEYS}`);
}

/** The labels an API request gave (already typed by its schema), checked. */
export function labelsOfFields(tag: string | undefined, metadata: Record<string, string> | undefined): Partial<Labels> {
  const out: Partial<Labels> = {};
  if (tag !== undefined) out.tag = checkTag(tag);
  if (metadata !== undefined) {
    // the adapters' schemas say so too; checked here again since a string would pass as an object of its characters
    if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
      throw refuse("metadata", "metadata must be an object of strings");
    }
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw refuse(`metadata.${k}`, `metadata.${k} must be a string`);
      checkMetadataEntry(k, v);
    }
    checkMetadataSize(metadata);
    out.metadata = { ...metadata };
  }
  return out;
}

/**
 * The labels of X-Outpost-Tag and X-Outpost-Metadata-KEY header fields (the key as the field name writes it);
 * `valueOf` reads a field's value. A field given twice is refused: which one was meant cannot be known.
 */
export function labelsOfHeaders(headers: readonly HeaderField[], valueOf: (h: HeaderField) => string): Partial<Labels> {
  const out: Partial<Labels> = {};
  const tagKey = TAG_HEADER.toLowerCase();
  const prefix = METADATA_HEADER_PREFIX.toLowerCase();
  for (const h of headers) {
    if (h.key === tagKey) {
      if ("tag" in out) throw refuse("tag", `${TAG_HEADER} is given more than once`);
      out.tag = checkTag(valueOf(h), "header");
    } else if (h.key.startsWith(prefix)) {
      const key = h.name.slice(METADATA_HEADER_PREFIX.length);
      const metadata = (out.metadata ??= {});
      if (key in metadata) throw refuse(`metadata.${key}`, `${h.name} is given more than once`);
      const value = valueOf(h);
      checkMetadataEntry(key, value, "header");
      metadata[key] = value;
    }
  }
  return out;
}

const TAG_KEY = TAG_HEADER.toLowerCase();
const METADATA_KEY_PREFIX = METADATA_HEADER_PREFIX.toLowerCase();

/** Is this header field one of ours, removed before the message is stored? */
export function isLabelHeader(key: string): boolean {
  return key === TAG_KEY || key.startsWith(METADATA_KEY_PREFIX);
}

/** The request's labels over the headers': the tag, and metadata key by key. */
export function mergeLabels(fromHeaders: Partial<Labels>, fromRequest: Partial<Labels> | undefined): Labels {
  const tag = fromRequest && "tag" in fromRequest ? (fromRequest.tag ?? null) : (fromHeaders.tag ?? null);
  const metadata = { ...fromHeaders.metadata, ...fromRequest?.metadata };
  checkMetadataSize(metadata);
  return { tag, metadata };
}
