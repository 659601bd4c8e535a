/**
 * @module api/params — query parameters of the list routes: unknown names refused (a typo must not silently widen
 * a listing), page sizes, times (RFC 3339 or unix seconds); each bad value a 400 naming its parameter.
 */
import { ApiError } from "../mail/errors.ts";

const bad = (name: string, message: string) => new ApiError(400, "invalid_request", message, name);

/** `access_token` is the key (api/auth.ts), allowed on every route. */
export function checkQueryNames(request: Request, known: readonly string[]): void {
  const q = request.url.indexOf("?");
  if (q < 0) return;
  for (const name of new URLSearchParams(request.url.slice(q + 1)).keys()) {
    if (name !== "access_token" && !known.includes(name)) {
      throw bad(name, `unknown query parameter ${JSON.stringify(name)}; known: ${known.join(", ")}`);
    }
  }
}

export function limitParam(value: string | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const n = /^\d{1,7}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= max)) throw bad("limit", `limit must be a whole number from 1 to ${max}`);
  return n;
}

const RFC3339 = /^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)$/;

/** ms since the epoch, from RFC 3339 (`2026-12-01T00:00:00Z`) or unix seconds (`1796083200`, fractions allowed). */
export function timeParam(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  let ms = NaN;
  if (/^\d{1,12}(?:\.\d{1,6})?$/.test(value)) ms = Math.round(Number(value) * 1000);
  else if (RFC3339.test(value)) ms = Date.parse(value.replace(" ", "T"));
  if (!Number.isFinite(ms)) throw bad(name, `${name} must be an RFC 3339 time (2026-12-01T00:00:00Z) or unix seconds`);
  return ms;
}
