/**
 * @module message/authors — the mailboxes a message says it comes from: every address in its `From` and `Sender`
 * fields (RFC 5322 §3.6.2), read with nodemailer's address parser (groups flattened, display names and comments
 * dropped). A field in which no address can be found counts as one empty address, so that it is refused where an
 * address is required rather than passed over.
 */
import addressparser from "nodemailer/lib/addressparser";
import type { SplitMessage } from "./headers.ts";

export interface Authors {
  from: string[];
  sender: string[];
}

export function authorsOf(m: SplitMessage): Authors {
  return { from: addressesIn(m, "from"), sender: addressesIn(m, "sender") };
}

function addressesIn(m: SplitMessage, key: string): string[] {
  return m.headers.filter((h) => h.key === key).flatMap((h) => addressesOfField(h.raw));
}

/**
 * A sender's mail carries the same From field message after message, and the parser costs more than the rest of
 * reading the header block: answers are kept by the field's text (bounded by starting over when full).
 */
const byField = new Map<string, readonly string[]>();
const BY_FIELD_MAX = 1000;

function addressesOfField(raw: string): readonly string[] {
  let found = byField.get(raw);
  if (found === undefined) {
    const value = Buffer.from(raw.slice(raw.indexOf(":") + 1).replace(/\r\n/g, ""), "latin1").toString("utf8");
    const list = addressparser(value, { flatten: true }).map((a) => a.address.trim()).filter((a) => a !== "");
    found = Object.freeze(list.length > 0 ? list : [""]);
    if (byField.size >= BY_FIELD_MAX) byField.clear();
    byField.set(raw, found);
  }
  return found;
}
