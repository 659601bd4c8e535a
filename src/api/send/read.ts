/**
 * @module api/send/read — reads a POST /v1/send body (JSON, urlencoded or multipart) into one object with
 * canonical field names: case-insensitive, aliases resolved, repeated form fields collected, JSON in form
 * fields decoded. Types are checked afterwards by the route schema, meaning by send/normalize. It also remembers
 * the names the client wrote, so an error about a canonical field can name it as the client did.
 */
import { ApiError } from "../../mail/errors.ts";
import { multipartEntries, type FormEntry } from "./multipart.ts";

/** Every accepted name (lower case) → its canonical field. */
const ALIASES: Record<string, string> = {
  envelope: "envelope",
  recipient: "recipient",
  recipients: "recipient",
  body: "body",
  mime: "body",
  from: "from",
  to: "to",
  cc: "cc",
  bcc: "bcc",
  subject: "subject",
  text: "text",
  html: "html",
  headers: "headers",
  attachments: "attachments",
  attachment: "attachments",
  inlinizecss: "inlinizecss",
  inlinecss: "inlinizecss",
  inlineizecss: "inlinizecss",
  clicktracking: "clicktracking",
  trackclicks: "clicktracking",
  openstracking: "openstracking",
  trackopens: "openstracking",
  bouncetracking: "bouncetracking",
  trackbounces: "bouncetracking",
  unsubscribe: "unsubscribe",
  listunsubscribe: "unsubscribe",
  idempotency_key: "idempotency_key",
  idempotencykey: "idempotency_key",
  reply_to: "reply_to",
  replyto: "reply_to",
  "reply-to": "reply_to",
  tag: "tag",
  metadata: "metadata",
};

/** Fields that collect every value given (several names, repeated form fields). */
const LIST_FIELDS = new Set(["recipient", "to", "cc", "bcc", "reply_to", "attachments"]);
const FLAG_FIELDS = new Set(["inlinizecss", "clicktracking", "openstracking", "bouncetracking", "unsubscribe"]);

const ATTACHMENT_KEYS: Record<string, string> = {
  filename: "filename",
  name: "filename",
  content: "content",
  content_type: "content_type",
  contenttype: "content_type",
  "content-type": "content_type",
  type: "content_type",
  cid: "cid",
  content_id: "cid",
  contentid: "cid",
};

export type Fields = Record<string, unknown>;

const bad = (message: string, field: string | null = null) => new ApiError(400, "invalid_request", message, field ?? undefined);

/**
 * The names a request used for each canonical field. Processing stays canonical; only error `field`s are
 * translated back, so `trackbounces=2` is reported under `trackbounces`, `Envelope` under `Envelope`.
 */
export class WrittenNames {
  private byField = new Map<string, Set<string>>();

  note(field: string, written: string): void {
    let names = this.byField.get(field);
    if (!names) this.byField.set(field, (names = new Set()));
    names.add(written);
  }

  /**
   * A canonical error field ("openstracking", "recipient[1]", "attachments[0].content") with its top-level
   * name as written. A field given under two names (recipient and recipients) keeps its canonical name:
   * no single written name is the one at fault.
   */
  rename(field: string): string {
    const head = /^[^.[]+/.exec(field)?.[0] ?? field;
    const names = this.byField.get(head);
    if (!names || names.size !== 1) return field;
    return names.values().next().value + field.slice(head.length);
  }
}

// per request, so the error handler (which sees the request, not the reader) can translate field names
const writtenByRequest = new WeakMap<Request, WrittenNames>();

export function writtenNamesOf(request: Request): WrittenNames | undefined {
  return writtenByRequest.get(request);
}

function canonicalName(name: string, written?: WrittenNames): string {
  const canon = ALIASES[name.toLowerCase()];
  if (!canon) throw bad(`unknown field ${JSON.stringify(name)}`, name);
  written?.note(canon, name);
  return canon;
}

export type BodyKind = "json" | "urlencoded" | "multipart";

/** What a 415 lists. */
export const ACCEPTED_TYPES = "application/json, application/x-www-form-urlencoded or multipart/form-data";

export function unsupportedType(contentType: string | null): ApiError {
  const given = contentType === null ? "no Content-Type" : `Content-Type ${JSON.stringify(contentType.split(";", 1)[0]!.trim())}`;
  return new ApiError(415, "unsupported_media_type", `${given}: send ${ACCEPTED_TYPES}`);
}

/** The body kind of a Content-Type, or null when /v1/send does not take it. */
export function bodyKind(contentType: string | null): BodyKind | null {
  const ct = (contentType ?? "").split(";", 1)[0]!.trim().toLowerCase();
  if (ct === "application/json" || ct.endsWith("+json")) return "json";
  if (ct === "application/x-www-form-urlencoded") return "urlencoded";
  if (ct === "multipart/form-data") return "multipart";
  return null;
}

/**
 * `limits`: the bytes a body of each kind may have. A body with a Content-Length was measured before it was read
 * (api/app.ts); one sent without (chunked) is counted as it comes and refused once it is too long.
 */
export async function readSendFields(request: Request, limits: Record<BodyKind, number>): Promise<Fields> {
  const contentType = request.headers.get("content-type");
  const kind = bodyKind(contentType);
  if (kind === null) throw unsupportedType(contentType);
  const written = new WrittenNames();
  writtenByRequest.set(request, written);
  const bytes = await bodyBytes(request, limits[kind]);
  switch (kind) {
    case "json":
      return fromJson(bytes.toString("utf8"), written);
    case "urlencoded": {
      const text = bytes.toString("utf8");
      // `curl -d '{…}'` without -H sends JSON labelled as a form: its one "field name" is the whole object
      if (/^\s*[{[]/.test(text)) {
        throw bad("the body is JSON but its Content-Type says form (application/x-www-form-urlencoded, what curl -d sends): send Content-Type: application/json");
      }
      return fromForm(new URLSearchParams(text).entries(), written);
    }
    case "multipart": {
      let entries: FormEntry[];
      try {
        entries = await multipartEntries(contentType!, bytes);
      } catch (e) {
        throw bad(`malformed multipart body: ${e instanceof Error ? e.message : String(e)}`);
      }
      return fromForm(entries, written);
    }
  }
}

/** The body's bytes; one sent without a Content-Length (which the guard bounds) may have `max` at most: 413 past it. */
export async function bodyBytes(request: Request, max: number): Promise<Buffer> {
  if (request.headers.has("content-length") || request.body === null) return Buffer.from(await request.arrayBuffer());
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of request.body) {
    length += chunk.byteLength;
    if (length > max) throw new ApiError(413, "too_large", `request too large: a body of this type may be at most ${max} bytes`, "body");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** `written` collects the names the body used. A null value is an omitted field (clients such as Postmark's send `"Cc": null`). */
export function fromJson(text: string, written?: WrittenNames): Fields {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw bad(text.trim() === "" ? "the request body is empty" : `malformed JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw bad("the JSON body must be an object");
  const out: Fields = {};
  for (const [name, value] of Object.entries(parsed)) {
    const field = canonicalName(name);
    if (value === null) continue;
    written?.note(field, name);
    if (field === "attachments") {
      const items = Array.isArray(value) ? value : [value];
      const before = (out[field] as unknown[] | undefined)?.length ?? 0; // `attachment` and `attachments` make one list
      append(out, field, items.map((a, i) => attachmentObject(a, before + i)));
    } else if (LIST_FIELDS.has(field)) {
      merge(out, field, value);
    } else if (field === "metadata" && (typeof value !== "object" || Array.isArray(value))) {
      // checked here: the schema's validation would turn a string into an object of its characters
      throw bad("metadata must be an object of strings", field);
    } else {
      if (field in out) throw bad(`field ${field} is given more than once`, field);
      out[field] = FLAG_FIELDS.has(field) && typeof value === "string" ? value.trim().toLowerCase() : value;
    }
  }
  return out;
}

export function fromForm(entries: Iterable<[string, string | File]>, written?: WrittenNames): Fields {
  const out: Fields = {};
  let attachmentIndex = 0;
  for (const [rawName, value] of entries) {
    const entry = metadataEntry(rawName);
    if (entry !== null) {
      if (typeof value !== "string") throw bad(`field ${rawName} cannot be a file`, `metadata.${entry}`);
      addMetadata(out, entry, value);
      written?.note("metadata", "metadata");
      continue;
    }
    // PHP-style "recipient[]" is the same field as "recipient"
    const field = canonicalName(rawName.endsWith("[]") ? rawName.slice(0, -2) : rawName, written);
    if (typeof value !== "string") {
      if (field === "attachments") append(out, field, [value]);
      else if (field === "body") setOnce(out, field, value);
      else throw bad(`field ${field} cannot be a file`, field);
      attachmentIndex += field === "attachments" ? 1 : 0;
      continue;
    }
    if (field === "attachments") {
      const items = decodeJsonField(value, field);
      const list = Array.isArray(items) ? items : [items];
      append(out, field, list.map((a) => attachmentObject(a, attachmentIndex++)));
    } else if (field === "headers") {
      append(out, field, formHeaders(value));
    } else if (field === "metadata") {
      const parsed = decodeJsonField(value, field);
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw bad("field metadata must be a JSON object in a form", field);
      for (const [k, v] of Object.entries(parsed)) addMetadata(out, k, v);
    } else if (LIST_FIELDS.has(field)) {
      merge(out, field, value);
    } else {
      setOnce(out, field, FLAG_FIELDS.has(field) ? value.trim().toLowerCase() : value);
    }
  }
  return out;
}

/** `metadata[KEY]` (PHP-style, what form builders write for an object) → KEY; null for any other name. */
function metadataEntry(name: string): string | null {
  return /^metadata\[([^\]]*)\]$/i.exec(name)?.[1] ?? null;
}

/** Form metadata gathers from JSON and `metadata[KEY]` fields; one key given twice is refused. */
function addMetadata(out: Fields, key: string, value: unknown): void {
  const metadata = (out.metadata ??= {}) as Record<string, unknown>;
  if (key in metadata) throw bad(`metadata key ${JSON.stringify(key)} is given more than once`, `metadata.${key}`);
  metadata[key] = value;
}

function append(out: Fields, field: string, items: unknown[]): void {
  const list = (out[field] ??= []) as unknown[];
  list.push(...items);
}

/** A list field given once keeps its form (so errors name `recipient`, not `recipient[0]`); given again, the values join. */
function merge(out: Fields, field: string, value: unknown): void {
  if (!(field in out)) {
    out[field] = value;
    return;
  }
  const before = out[field];
  out[field] = [...(Array.isArray(before) ? before : [before]), ...(Array.isArray(value) ? value : [value])];
}

function setOnce(out: Fields, field: string, value: unknown): void {
  if (field in out) throw bad(`field ${field} is given more than once`, field);
  out[field] = value;
}

function decodeJsonField(value: string, field: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    throw bad(`field ${field} must be JSON in a form`, field);
  }
}

/** In a form, `headers` is JSON ({"Name":"value"} or a list) or one "Name: value" per field. */
function formHeaders(value: string): unknown[] {
  const v = value.trimStart();
  if (v.startsWith("{") || v.startsWith("[")) {
    const parsed = decodeJsonField(v, "headers");
    if (Array.isArray(parsed)) return parsed;
    if (parsed && typeof parsed === "object") {
      return Object.entries(parsed).flatMap(([name, val]) => (Array.isArray(val) ? val : [val]).map((one) => ({ name, value: one })));
    }
    throw bad("field headers must be an object or a list", "headers");
  }
  return [value];
}

/** Attachment keys are case-insensitive too; unknown keys are an error, not silently dropped. */
function attachmentObject(a: unknown, index: number): unknown {
  if (a === null || typeof a !== "object" || Array.isArray(a) || a instanceof Blob) return a;
  const out: Fields = {};
  for (const [k, v] of Object.entries(a)) {
    const key = ATTACHMENT_KEYS[k.toLowerCase()];
    if (!key) throw bad(`unknown attachment field ${JSON.stringify(k)}`, `attachments[${index}].${k}`);
    if (v === null) continue; // as for top-level fields: Postmark sends "ContentID": null
    if (key in out) throw bad(`attachment field ${key} is given more than once`, `attachments[${index}].${key}`);
    out[key] = v;
  }
  return out;
}
