/**
 * @module api/compat/dialect — what a drop-in API (Postmark's, Mailgun's) changes around outpost's own routes:
 * which paths are its, where its key is, how its errors look, and how outpost's field names read in its terms.
 */
import type { Logger } from "../../observe/log.ts";
import { viewOf, type ErrorView } from "../errors.ts";

export interface Dialect {
  /** "postmark" or "mailgun": shown in logs and metrics */
  name: string;
  /** is this request path one of this API's routes? */
  owns(path: string): boolean;
  /** the API key the request presents the way this API's clients send it, or null */
  key(request: Request): string | null;
  /** what a request without such a key is told */
  missingKey: string;
  /** any error on one of this API's routes, answered as this API answers it */
  errorResponse(error: unknown, elysiaCode: string | number, log: Logger): Response;
}

/** Native field path → the name the client wrote ("attachments[0].content" → "Attachments[0].Content"). */
export type FieldNamer = (field: string) => string;

/**
 * An error of the shared send path as this API's client should read it: the field at fault in the client's own
 * terms, and the message without outpost's name for it ("to: \"bob\" is not a valid email address" →
 * field "To", text "\"bob\" is not a valid email address").
 */
export interface DialectView extends ErrorView {
  /** the field as the client wrote it, or null */
  shownField: string | null;
  /** the message with a leading native field name taken off (it is in `shownField`) */
  text: string;
}

export function dialectView(error: unknown, elysiaCode: string | number, log: Logger, rename: FieldNamer): DialectView {
  const view = viewOf(error, elysiaCode, log);
  if (view.field === null) return { ...view, shownField: null, text: view.message };
  const shownField = rename(view.field);
  let text = view.message;
  for (const lead of [`${view.field}: `, `${view.field} `]) {
    if (text.startsWith(lead)) {
      text = text.slice(lead.length);
      break;
    }
  }
  return { ...view, shownField, text };
}

/** The head of a native field path and the rest: "attachments[0].content" → ["attachments", 0, "content"]. */
export function fieldParts(field: string): { head: string; index: number | null; rest: string } {
  const m = /^([^.[]+)(?:\[(\d+)\])?(?:\.(.*))?$/.exec(field);
  if (!m) return { head: field, index: null, rest: "" };
  return { head: m[1]!, index: m[2] === undefined ? null : Number(m[2]), rest: m[3] ?? "" };
}
