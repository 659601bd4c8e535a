/**
 * @module bounce/plain-text — bounces written for people, with no delivery-status fields: where they name the
 * failed recipients and what the server said.
 *
 * The formats differ in wording but share a shape: a notice, one block per failed address, then a copy of the
 * message after a marker line. A block starts at a line that is an address on its own ("<a@b>:" qmail and
 * Yahoo, "  a@b" Exim, mail.ru, Gmail, Domino, Notes, '"a@b":' GMX, "a@b on <date>" Exchange 2003,
 * "a@b<mailto:a@b>" Office 365) and runs to the next one; or at a line that is an address followed by the
 * reply ("a@b: 550 …" OpenSMTPD, "<a@b>: host … said: …" Postfix, "550 <a@b>... User unknown" Sendmail
 * transcripts), which runs over its indented continuation lines only.
 */

export interface TextRecipient {
  address: string;
  /** the block's text, whitespace collapsed to single spaces */
  text: string;
}

const LOCAL = String.raw`[^\s<>"'(),;:@\[\]\\]{1,64}`;
const DOMAIN = String.raw`[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,62}\.){1,8}[\p{L}\p{N}-]{1,63}`;
const ADDR = `${LOCAL}@${DOMAIN}`;

/** an address alone on its line, with the decorations the formats add */
const BARE_LINE = new RegExp(
  String.raw`^\s*[<"]?(${ADDR})[>"]?:?(?:\s*<mailto:[^<>\s]{1,320}>)?(?:\s+\([^()]{0,100}\))?(?:\s+on\s+.{1,100})?\s*$`,
  "u",
);
/** an address and the reply on one line */
const INLINE_LINE = new RegExp(String.raw`^\s*[<"]?(${ADDR})[>"]?:\s+\S`, "u");
const TRANSCRIPT_LINE = new RegExp(String.raw`^\s*(?:[245]\d\d[ -])?<(${ADDR})>\.\.\.`, "u");
/** recipient lines are short; longer lines are never tested against the address patterns */
const MAX_RECIPIENT_LINE = 400;
const MAX_BLOCK_CHARS = 4000;
const MAX_RECIPIENTS = 1000;

/** Marker lines before the copy of the message. Generic words need the dashes the formats put around them. */
const RETURNED_MARKERS = [
  /^\s*[-=*_]{2,}\s*(this is a copy of|original message|unsent message follows|returned message|undelivered message|message headers follow)/i,
  /^\s*[-=*_]*\s*(below this line is a copy of the message|below is a copy of the original message|the header of the original message is following)/i,
  /^\s*original message headers:\s*$/i,
];
const HEADER_LINE = /^(return-path|received|message-id|dkim-signature|x-received|delivered-to):/i;

/** The report (the notice) and what follows it (the returned message or its headers, "" when absent). */
export function splitAtReturned(text: string): { report: string; returned: string } {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const marker = RETURNED_MARKERS.some((re) => re.test(line));
    // no marker: the copy's header lines (two in a row) start it
    const headers = HEADER_LINE.test(line) && HEADER_LINE.test(lines[i + 1] ?? "");
    if (marker || headers) return { report: lines.slice(0, i).join("\n"), returned: lines.slice(marker ? i + 1 : i).join("\n") };
  }
  return { report: text, returned: "" };
}

/** The failed recipients a notice names, in order, each once (a repeated block adds only new text). */
export function textRecipients(report: string, ignore: ReadonlySet<string>): TextRecipient[] {
  const found = new Map<string, { address: string; segments: string[][] }>();
  let block: string[] | null = null;
  let inline = false;
  let size = 0;
  for (const line of report.split("\n")) {
    const hit = line.length <= MAX_RECIPIENT_LINE ? recipientLine(line) : null;
    if (hit && !ignore.has(hit.address.toLowerCase())) {
      const key = hit.address.toLowerCase();
      if (!found.has(key) && found.size >= MAX_RECIPIENTS) break;
      const entry = found.get(key) ?? { address: hit.address, segments: [] };
      found.set(key, entry);
      block = hit.inline ? [line] : [];
      entry.segments.push(block);
      inline = hit.inline;
      size = 0;
    } else if (block && inline && !/^[ \t]+\S/.test(line)) {
      block = null;
    } else if (block && size < MAX_BLOCK_CHARS) {
      block.push(line);
      size += line.length;
    }
  }
  return [...found.values()].map(({ address, segments }) => {
    const texts: string[] = [];
    for (const text of segments.map((lines) => collapse(lines.join(" ")))) if (text && !texts.some((t) => t.includes(text))) texts.push(text);
    return { address, text: texts.join(" ") };
  });
}

function recipientLine(line: string): { address: string; inline: boolean } | null {
  const bare = BARE_LINE.exec(line);
  if (bare) return { address: bare[1]!, inline: false };
  const hit = TRANSCRIPT_LINE.exec(line) ?? INLINE_LINE.exec(line);
  return hit ? { address: hit[1]!, inline: true } : null;
}

function collapse(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

const STATUS_RE = /(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)/;
const CODE_RE = /(?<![\d.])([245]\d\d)(?=[ -]|$)/m;

/** The first basic reply code (550) and RFC 3463 status (5.1.1, also in qmail's "#5.4.4") in a text. */
export function replyCodes(text: string): { code?: number; status: string } {
  const head = text.slice(0, MAX_BLOCK_CHARS);
  const code = CODE_RE.exec(head)?.[1];
  const status = STATUS_RE.exec(head)?.slice(1, 4).join(".") ?? "";
  return { ...(code ? { code: Number(code) } : {}), status };
}

/** The Message-ID ("<id@host>") of the header block that `text` starts with (after blank lines), folded or not. */
export function messageIdIn(text: string): string | undefined {
  const start = text.search(/\S/);
  if (start < 0) return undefined;
  const rest = text.slice(start, start + 200_000);
  const end = rest.search(/\n[ \t]*\n/);
  const header = end < 0 ? rest : rest.slice(0, end);
  return /^message-id:[ \t]*(?:\n[ \t]+)?(<[^<>\s]{1,500}>)/im.exec(header)?.[1];
}

/** A notice that says the message is only delayed and will be retried (Gmail, Exchange, Sendmail warnings). */
export function isDelayWarning(text: string): boolean {
  const head = text.slice(0, 20_000);
  return /warning message only|has been delayed|delivery (is |has been )?delayed|not yet been delivered|still being retried|will (continue to )?(be )?retr(y|ied)|delivery status notification \(delay\)/i.test(head)
    && !/failed permanently|permanent (error|failure|fatal)|could not be delivered/i.test(head);
}
