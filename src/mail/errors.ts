/** @module mail/errors — errors that carry their protocol meaning (SMTP reply, HTTP status). */

/**
 * An SMTP-facing failure. `code` is the basic reply code (4xx temporary, 5xx permanent),
 * `enhanced` the RFC 3463 status ("5.7.1"); `message` is what the client sees.
 */
export class SmtpError extends Error {
  constructor(
    readonly code: number,
    readonly enhanced: string,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
  get temporary(): boolean {
    return this.code < 500;
  }
  /** "554 5.7.1 relaying denied" */
  override toString(): string {
    return `${this.code} ${this.enhanced} ${this.message}`;
  }
}

export type ApiErrorCode =
  | "invalid_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "conflict"
  | "length_required"
  | "too_large"
  | "unsupported_media_type"
  | "rate_limited"
  | "unavailable";

/** An HTTP-facing failure, rendered as docs/api.md's `{error:{code,message,field}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 405 | 409 | 411 | 413 | 415 | 429 | 503,
    readonly code: ApiErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** Bad command-line usage: exit code 2. */
export class UsageError extends Error {}
