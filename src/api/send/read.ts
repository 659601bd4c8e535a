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
};

/** Fields that collect every value given (several names, repeated form fields). */
const LIST_FIELDS = new Set(["recipient", "to", "cc", "bcc", "attachments"]);
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

/** The body kind of a Content-Type, or null when /v1/send does not take it. */
export function bodyKind(contentType: string | null): BodyKind | null {
  const ct = (contentType ?? "").split(";", 1)[0]!.trim().toLowerCase();
  if (ct === "application/json" || ct.endsWith("+json")) return "json";
  if (ct === "application/x-www-form-urlencoded") return "urlencoded";
  if (ct === "multipart/form-data") return "multipart";
  return null;
}

export async function readSendFields(request: Request): Promise<Fields> {
  const kind = bodyKind(request.headers.get("content-type"));
  const written = new WrittenNames();
  writtenByRequest.set(request, written);
  switch (kind) {
    case "json":
      return fromJson(await request.text(), written);
    case "urlencoded":
      return fromForm(new URLSearchParams(await request.text()).entries(), written);
    case "multipart": {
      let entries: FormEntry[];
      try {
        entries = await multipartEntries(request.headers.get("content-type")!, Buffer.from(await request.arrayBuffer()));
      } catch (e) {
        throw bad(`malformed multipart body: ${e instanceof Error ? e.message : String(e)}`);
      }
      return fromForm(entries, written);
    }
    default:
      throw bad("Content-Type must be application/json, application/x-www-form-urlencoded or multipart/form-data");
  }
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
    } else if (LIST_FIELDS.has(field)) {
      merge(out, field, value);
    } else {
      setOnce(out, field, FLAG_FIELDS.has(field) ? value.trim().toLowerCase() : value);
    }
  }
  return out;
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
