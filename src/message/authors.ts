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
  return m.headers
    .filter((h) => h.key === key)
    .flatMap((h) => {
      const value = Buffer.from(h.raw.slice(h.raw.indexOf(":") + 1).replace(/\r\n/g, ""), "latin1").toString("utf8");
      const found = addressparser(value, { flatten: true }).map((a) => a.address.trim()).filter((a) => a !== "");
      return found.length > 0 ? found : [""];
    });
}
