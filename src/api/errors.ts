/**
 * @module api/errors — turns any error into docs/api.md's `{error:{code,message,field}}` response: our ApiError and
 * IntakeError, Elysia's validation, parse and not-found errors, and (logged) everything else as a 500.
 */
import { ValidationError } from "elysia";
import { IntakeError } from "../intake/policy.ts";
import { ApiError } from "../mail/errors.ts";
import type { Logger } from "../observe/log.ts";

export interface ErrorView {
  status: number;
  code: string;
  message: string;
  field: string | null;
  /** seconds, for 429 and 503 */
  retryAfter?: number;
  /** the methods a 405's path takes */
  allow?: string[];
}

/** ApiError with a Retry-After: the rate limiter's 429. */
export class RetryLaterError extends ApiError {
  constructor(
    status: 429 | 503,
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(status, status === 429 ? "rate_limited" : "unavailable", message);
  }
}

const CODE_FOR_STATUS: Record<number, string> = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  411: "length_required",
  413: "too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
  503: "unavailable",
};

/** "/attachments/0/content" → "attachments[0].content" */
export function fieldFromPath(path: string): string | null {
  const parts = path.split("/").filter((p) => p !== "");
  if (parts.length === 0) return null;
  let out = parts[0]!;
  for (const p of parts.slice(1)) out += /^\d+$/.test(p) ? `[${p}]` : `.${p}`;
  return out;
}

/** How an error's canonical field is shown: POST /v1/send gives back the name the client wrote. */
export type FieldNamer = (field: string) => string;

/**
 * Elysia error codes are strings; our own classes are checked first so a wrapped cause is found too.
 * `nameField` translates the field (and the field in a validation message) for the client.
 */
export function viewOf(error: unknown, elysiaCode: string | number, log: Logger, nameField: FieldNamer = (f) => f): ErrorView {
  const view = canonicalView(error, elysiaCode, log, nameField);
  return view.field === null ? view : { ...view, field: nameField(view.field) };
}

function canonicalView(error: unknown, elysiaCode: string | number, log: Logger, nameField: FieldNamer): ErrorView {
  // errors thrown by a parse hook reach us wrapped in Elysia's ParseError
  const inner = elysiaCode === "PARSE" && error instanceof Error && error.cause ? error.cause : error;
  if (inner instanceof RetryLaterError) {
    return { status: inner.status, code: inner.code, message: inner.message, field: null, retryAfter: inner.retryAfterSeconds };
  }
  if (inner instanceof ApiError) return { status: inner.status, code: inner.code, message: inner.message, field: inner.field ?? null };
  if (inner instanceof IntakeError) {
    const v: ErrorView = { status: inner.httpStatus, code: CODE_FOR_STATUS[inner.httpStatus]!, message: inner.message, field: inner.field ?? null };
    if (inner.httpStatus === 503) {
      // a store failure carries its cause; a refusal for now without one (a sender domain's check met DNS trouble) is no fault of ours
      if (inner.cause !== undefined) log.error("api_store_failed", { error: inner.cause });
      v.retryAfter = 1;
    }
    return v;
  }
  if (inner instanceof ValidationError) return validationView(inner, nameField);
  switch (elysiaCode) {
    case "NOT_FOUND":
      return { status: 404, code: "not_found", message: "no such endpoint", field: null };
    case "PARSE":
      return { status: 400, code: "invalid_request", message: `the request body could not be read: ${messageOf(inner)}`, field: null };
    case "INVALID_FILE_TYPE":
      return { status: 400, code: "invalid_request", message: messageOf(inner), field: null };
  }
  log.error("api_internal_error", { error: inner, stack: inner instanceof Error ? inner.stack : undefined });
  return { status: 500, code: "internal_error", message: "internal error", field: null };
}

function validationView(e: ValidationError, nameField: FieldNamer): ErrorView {
  const first = e.valueError;
  const field = first ? fieldFromPath(first.path) : null;
  const shown = field === null ? null : nameField(field);
  const where = e.type === "query" ? "query parameter" : e.type === "params" ? "path parameter" : "field";
  // for a union TypeBox only says "Expected union value"; the field's description says what is accepted
  const isUnion = first !== undefined && Array.isArray((first.schema as { anyOf?: unknown }).anyOf);
  const expected = isUnion && typeof first.schema.description === "string" ? first.schema.description : first?.message;
  const message = shown ? `invalid ${where} ${shown}: ${expected ?? "invalid value"}` : `invalid ${e.type}: ${first?.message ?? "invalid value"}`;
  return { status: 400, code: "invalid_request", message, field };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function errorResponse(v: ErrorView): Response {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (v.retryAfter !== undefined) headers["retry-after"] = String(v.retryAfter);
  if (v.allow !== undefined) headers.allow = v.allow.join(", ");
  return new Response(JSON.stringify({ error: { code: v.code, message: v.message, field: v.field } }), { status: v.status, headers });
}
