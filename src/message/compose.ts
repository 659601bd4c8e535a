/**
 * @module message/compose — structured fields (from, to, subject, text, html, headers, attachments) → one
 * MIME message, built by nodemailer's MailComposer. Pure input → bytes: never reads files or URLs.
 */
import MailComposer from "nodemailer/lib/mail-composer";

export interface ComposeAttachment {
  filename?: string;
  content: Buffer;
  contentType?: string;
  /** Content-ID: an inline part the HTML can show as `cid:…` */
  cid?: string;
}

export interface Mailbox {
  name?: string;
  address: string;
}

export interface ComposeInput {
  from: Mailbox;
  to: Mailbox[];
  cc: Mailbox[];
  /** the Reply-To field; none when empty */
  replyTo?: Mailbox[];
  /** recipients only: never written into the message */
  bcc: Mailbox[];
  subject?: string;
  text?: string;
  html?: string;
  /** extra header fields in order; names and values already checked for CR/LF/NUL */
  headers: { name: string; value: string }[];
  attachments: ComposeAttachment[];
}

/** Headers MailComposer owns: a caller setting them would break the MIME structure it builds. */
export const RESERVED_HEADERS = new Set(["content-type", "content-transfer-encoding", "mime-version", "bcc"]);

export async function composeMessage(input: ComposeInput, hostname: string): Promise<Buffer> {
  const composer = new MailComposer({
    from: { name: input.from.name ?? "", address: input.from.address },
    to: input.to.length ? input.to.map(mailbox) : undefined,
    cc: input.cc.length ? input.cc.map(mailbox) : undefined,
    replyTo: input.replyTo?.length ? input.replyTo.map(mailbox) : undefined,
    subject: input.subject,
    text: input.text,
    html: input.html,
    messageId: `<${crypto.randomUUID()}@${hostname}>`,
    headers: input.headers.map((h) => ({ key: h.name, value: h.value })),
    // only bytes we were given: a `path`/`href` must never make the server read a file or fetch a URL
    attachments: input.attachments.map((a) => ({
      filename: a.filename,
      content: a.content,
      contentType: a.contentType,
      cid: a.cid,
    })),
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  return await composer.compile().build();
}

function mailbox(m: Mailbox): { name: string; address: string } {
  return { name: m.name ?? "", address: m.address };
}
