/**
 * @module bounce/dsn-fields — the RFC 3464 fields of a delivery-status report (per-message and per-recipient
 * groups), read from a message/delivery-status part or from text where a broken report left them inline.
 *
 * The fields are "Name: value" lines with folded continuations, the groups separated by blank lines (RFC 3464
 * §2.1). Reading stops at the returned message (a "Content-Type: message/rfc822" line, or a group holding
 * Received/Return-Path headers), so a bounce nested in the returned copy is never read as ours.
 */

export interface DsnRecipientFields {
  finalRecipient?: string;
  originalRecipient?: string;
  /** lower-case, as written (may be non-standard, e.g. "deliverable") */
  action?: string;
  /** the RFC 3463 code alone, comment dropped */
  status?: string;
  /** the Diagnostic-Code text without its type ("smtp;"), on one line */
  diagnostic?: string;
  remoteMta?: string;
}

export interface DsnFields {
  reportingMta?: string;
  recipients: DsnRecipientFields[];
  /** where reading stopped: the returned message (or its header), if any, starts here */
  end: number;
}

const FIELD_RE = /^([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)$/;
const RETURNED_PART_RE = /^content-type:[ \t]*(message\/(rfc822|global|rfc822-headers|global-headers)|text\/rfc822-headers)/i;
const MESSAGE_HEADERS = new Set(["received", "x-received", "return-path", "dkim-signature", "message-id"]);
/** field groups beyond this many are not read: a report about thousands of recipients is not one we sent */
const MAX_GROUPS = 1000;

/** Reads the report's groups; recipients are the groups that name a recipient. */
export function readDsnFields(text: string): DsnFields {
  const { groups, end } = readFieldGroups(text);
  const out: DsnFields = { recipients: [], end };
  for (const fields of groups) {
    if (fields.has("final-recipient") || fields.has("original-recipient")) out.recipients.push(recipientOf(fields));
    else if (fields.has("reporting-mta")) out.reportingMta ??= mtaName(fields.get("reporting-mta")!);
  }
  return out;
}

/**
 * The "Name: value" groups of `text` (lower-case names, first value of each name, folded lines joined), up to
 * the returned message; `end` is where that starts. Also reads RFC 5965 feedback reports, which share the form.
 */
export function readFieldGroups(text: string): { groups: Map<string, string>[]; end: number } {
  const groups: Map<string, string>[] = [];
  let group = new Map<string, string>();
  let last: string | null = null;
  let pos = 0;
  let groupStart = 0;
  /** false when the group just ended is the returned message's header (or too many were read) */
  const flush = (): boolean => {
    if (group.size === 0) return true;
    if ([...group.keys()].some((k) => MESSAGE_HEADERS.has(k))) return false;
    groups.push(group);
    group = new Map();
    return groups.length < MAX_GROUPS;
  };
  for (const line of text.split("\n")) {
    const start = pos;
    pos += line.length + 1;
    if (RETURNED_PART_RE.test(line)) {
      flush();
      // the returned message starts after this part's MIME header
      const blank = /\n[ \t]*\n/g;
      blank.lastIndex = start;
      const after = blank.exec(text);
      return { groups, end: after ? after.index + after[0].length : text.length };
    }
    if (line.trim() === "") {
      if (!flush()) return { groups, end: groupStart };
      last = null;
      groupStart = pos;
    } else if (/^[ \t]/.test(line) && last) {
      group.set(last, `${group.get(last)} ${line.trim()}`);
    } else {
      const m = FIELD_RE.exec(line);
      const name = m ? m[1]!.toLowerCase() : null;
      // a repeated field keeps its first value, continuation lines included
      last = name && !group.has(name) ? name : null;
      if (last) group.set(last, m![2]!.trim());
    }
  }
  flush();
  return { groups, end: text.length };
}

function recipientOf(fields: Map<string, string>): DsnRecipientFields {
  const status = /\d\.\d{1,3}\.\d{1,3}/.exec(fields.get("status") ?? "")?.[0];
  const action = /^[A-Za-z-]+/.exec(fields.get("action") ?? "")?.[0]?.toLowerCase();
  const diagnostic = fields.get("diagnostic-code")?.replace(/^[A-Za-z][\w.-]{0,40}[ \t]*;/, "").replace(/\s+/g, " ").trim();
  return {
    finalRecipient: addressOf(fields.get("final-recipient")),
    originalRecipient: addressOf(fields.get("original-recipient")),
    action,
    status,
    diagnostic: diagnostic || undefined,
    remoteMta: fields.has("remote-mta") ? mtaName(fields.get("remote-mta")!) : undefined,
  };
}

/** "rfc822; <a@b.example>" → "a@b.example"; undefined unless it is an address ("unknown" is not). */
function addressOf(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const bare = value.replace(/^[A-Za-z][\w.-]{0,40}[ \t]*;/, "").trim().replace(/^<(.*)>$/, "$1").trim();
  return /^[^\s@<>]{1,256}@[^\s@<>]{1,255}$/.test(bare) ? bare : undefined;
}

/** "dns; mx.example.net" → "mx.example.net" */
function mtaName(value: string): string {
  return value.replace(/^[A-Za-z][\w.-]{0,40}[ \t]*;/, "").trim().slice(0, 255);
}
