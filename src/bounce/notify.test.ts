import { describe, expect, test } from "bun:test";
import { simpleParser } from "mailparser";
import type { Submission } from "../intake/accept.ts";
import type { EnqueuedMessage } from "../queue/enqueue.ts";
import { addressField, buildDsn, dsnSuppressedReason, queueDsn, type DsnInput, type DsnIntake } from "./notify.ts";

const ORIGINAL = [
  "Received: from client.example.org by outpost.test",
  "From: Sender <sender@example.org>",
  "To: user@dest.test",
  "Subject: Quarterly report",
  "Message-ID: <orig-1@example.org>",
  "",
  "the body, which must not be returned",
  "",
].join("\r\n");

const NOW = Date.UTC(2026, 10, 25, 12, 0, 0);

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    hostname: "outpost.test",
    queueId: "q123",
    envelopeFrom: "sender@example.org",
    arrivalDate: NOW - 3_600_000,
    original: Buffer.from(ORIGINAL),
    recipients: [
      { address: "user@dest.test", status: "5.1.1", code: 550, diagnostic: "550 5.1.1 <user@dest.test>: user unknown", mx: "mx1.dest.test", lastAttemptAt: NOW },
    ],
    now: NOW,
    ...over,
  };
}

/** The message/delivery-status fields of a parsed DSN, per block (message fields first). */
function statusBlocks(raw: string): string[] {
  const start = raw.indexOf("Content-Type: message/delivery-status");
  const body = raw.slice(raw.indexOf("\r\n\r\n", start) + 4, raw.indexOf("\r\n--dsn-", start));
  return body.split("\r\n\r\n").filter((b) => b.trim());
}

describe("the DSN's structure", () => {
  test("parses with mailparser as a multipart/report of type delivery-status", async () => {
    const parsed = await simpleParser(buildDsn(input()));
    const ct = parsed.headers.get("content-type") as { value: string; params: Record<string, string> };
    expect(ct.value).toBe("multipart/report");
    expect(ct.params["report-type"]).toBe("delivery-status");
    expect(parsed.from?.value[0]?.address).toBe("MAILER-DAEMON@outpost.test");
    expect(parsed.headers.get("auto-submitted")).toBe("auto-replied");
    expect(parsed.inReplyTo).toBe("<orig-1@example.org>");
  });

  test("carries the real status code and the remote diagnostic for each recipient", async () => {
    const raw = buildDsn(input()).toString();
    const [msg, rcpt] = statusBlocks(raw);
    expect(msg).toContain("Reporting-MTA: dns; outpost.test");
    expect(msg).toContain("Arrival-Date: Wed, 25 Nov 2026 11:00:00 +0000");
    expect(rcpt).toContain("Final-Recipient: rfc822; user@dest.test");
    expect(rcpt).toContain("Action: failed");
    expect(rcpt).toContain("Status: 5.1.1");
    expect(rcpt).toContain("Remote-MTA: dns; mx1.dest.test");
    expect(rcpt).toContain("Diagnostic-Code: smtp; 550 5.1.1 <user@dest.test>: user unknown");
    const parsed = await simpleParser(Buffer.from(raw));
    expect(parsed.text).toContain("550 5.1.1 <user@dest.test>: user unknown");
  });

  test("attaches the original headers as text/rfc822-headers, without the body", async () => {
    const parsed = await simpleParser(buildDsn(input()));
    const headers = parsed.attachments.find((a) => a.contentType === "text/rfc822-headers");
    expect(headers).toBeDefined();
    const text = headers!.content.toString();
    expect(text).toContain("Subject: Quarterly report");
    expect(text).toContain("Message-ID: <orig-1@example.org>");
    expect(text).not.toContain("must not be returned");
  });

  test("lists several recipients, each in its own block, and omits Remote-MTA when no server answered", () => {
    const raw = buildDsn(input({
      recipients: [
        { address: "a@dest.test", status: "5.1.1", code: 550, diagnostic: "550 5.1.1 unknown", mx: "mx1.dest.test", lastAttemptAt: NOW },
        { address: "b@gone.test", status: "4.4.7", code: 0, diagnostic: "message expired after 5d in the queue; last reply: connect ECONNREFUSED", lastAttemptAt: NOW },
      ],
    })).toString();
    const blocks = statusBlocks(raw);
    expect(blocks).toHaveLength(3);
    expect(blocks[2]).toContain("Status: 4.4.7");
    expect(blocks[2]).not.toContain("Remote-MTA");
    expect(blocks[2]).toMatch(/Diagnostic-Code: X-Outpost; message expired/);
  });

  test("folds a long diagnostic and keeps it 7-bit with no line over 78 characters", () => {
    const long = "550 5.7.1 " + "policy violation detail ".repeat(12) + "caf\u00e9\r\ninjected: header";
    const raw = buildDsn(input({ recipients: [{ address: "u@dest.test", status: "5.7.1", code: 550, diagnostic: long, lastAttemptAt: NOW }] })).toString();
    const [, rcpt] = statusBlocks(raw);
    for (const line of rcpt!.split("\r\n")) expect(line.length).toBeLessThanOrEqual(78);
    expect(rcpt).not.toMatch(/^injected:/m);
    expect(rcpt).toContain("caf?");
  });

  test("a UTF-8 recipient is named with RFC 6533's utf-8 type in its 7-bit xtext form, not garbled to \"?\"", async () => {
    const utf8 = "\u7528\u6237+1@\u4f8b\u5b50.\u5e7f\u544a";
    const raw = buildDsn(input({
      recipients: [
        { address: utf8, status: "5.1.1", code: 550, diagnostic: "550 5.1.1 unknown", mx: "mx1.dest.test", lastAttemptAt: NOW },
        { address: "b@dest.test", status: "5.1.1", code: 550, diagnostic: "550 5.1.1 unknown", mx: "mx1.dest.test", lastAttemptAt: NOW },
      ],
    })).toString("utf8");
    const [, first, second] = statusBlocks(raw);
    // "+" is an xtext special, so it is escaped too (RFC 6533 QCHAR)
    expect(first).toContain("Final-Recipient: utf-8; \\x{7528}\\x{6237}\\x{2B}1@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}\r\n");
    expect(second).toContain("Final-Recipient: rfc822; b@dest.test\r\n");
    // the delivery-status part stays 7-bit
    expect(/^[\x00-\x7f]*$/.test(statusBlocks(raw).join(""))).toBe(true);
    // the field decodes back to the exact address, and mailparser shows it as sent
    const field = /Final-Recipient: utf-8; (\S+)/.exec(raw)![1]!;
    expect(field.replace(/\\x\{([0-9A-F]+)\}/g, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))).toBe(utf8);
    const parsed = await simpleParser(Buffer.from(raw));
    expect(parsed.text).toContain(`Final-Recipient: utf-8; ${field}`);
  });

  test("addressField: rfc822 for ASCII, utf-8 xtext with upper-case hex and no leading zeros otherwise", () => {
    expect(addressField("user+tag@dest.test")).toBe("rfc822; user+tag@dest.test");
    expect(addressField("j\u00f6rg@x.test")).toBe("utf-8; j\\x{F6}rg@x.test");
    expect(addressField("a=b\\c@\u00e9.test")).toBe("utf-8; a\\x{3D}b\\x{5C}c@\\x{E9}.test");
    // outside the BMP: one code point, not two surrogates
    expect(addressField("\u{1F600}@x.test")).toBe("utf-8; \\x{1F600}@x.test");
  });

  test("every line ends in CRLF", () => {
    const raw = buildDsn(input()).toString("latin1");
    expect(raw.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/);
  });
});

describe("when no DSN is sent", () => {
  const msg = (headers: string) => Buffer.from(`${headers}Subject: x\r\n\r\nbody\r\n`);

  test("never for the null sender", () => {
    expect(dsnSuppressedReason("", msg(""))).toBe("null sender");
  });

  test("never for an Auto-Submitted message", () => {
    expect(dsnSuppressedReason("s@example.org", msg("Auto-Submitted: auto-generated\r\n"))).toBe("Auto-Submitted message");
    expect(dsnSuppressedReason("s@example.org", msg("auto-submitted: auto-replied; owner-email=x@y\r\n"))).toBe("Auto-Submitted message");
  });

  test("but Auto-Submitted: no is a normal message", () => {
    expect(dsnSuppressedReason("s@example.org", msg("Auto-Submitted: no\r\n"))).toBeNull();
  });

  test("never for a multipart/report", () => {
    expect(dsnSuppressedReason("s@example.org", msg('Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'))).toBe(
      "multipart/report message",
    );
  });

  test("never for a message with more than 25 Received headers, but still for exactly 25", () => {
    expect(dsnSuppressedReason("s@example.org", msg("Received: x\r\n".repeat(26)))).toBe("more than 25 Received headers");
    expect(dsnSuppressedReason("s@example.org", msg("Received: x\r\n".repeat(25)))).toBeNull();
  });

  test("a multipart/mixed message gets a DSN", () => {
    expect(dsnSuppressedReason("s@example.org", msg('Content-Type: multipart/mixed; boundary="b"\r\n'))).toBeNull();
  });
});

describe("queueing the DSN through intake", () => {
  function recordingIntake() {
    const got: Submission[] = [];
    const intake: DsnIntake = {
      acceptNow: (sub) => {
        got.push(sub);
        return { id: "dsn1", recipients: [] } as unknown as EnqueuedMessage;
      },
    };
    return { got, intake };
  }

  test("goes from <> to the envelope sender, without an owner and with all tracking off", () => {
    const { got, intake } = recordingIntake();
    const r = queueDsn(intake, input());
    expect("queued" in r).toBe(true);
    expect(got).toHaveLength(1);
    const sub = got[0]!;
    expect(sub.envelopeFrom).toBe("");
    expect(sub.recipients).toEqual(["sender@example.org"]);
    expect(sub.userId).toBeNull();
    expect(sub.allowedDomains).toBeNull();
    expect(sub.source).toBe("dsn");
    expect(sub.options).toEqual({ inlineCss: false, trackClicks: false, trackOpens: false, trackBounces: false, unsubscribe: false });
  });

  test("is skipped, without calling intake, when a rule forbids it", () => {
    const { got, intake } = recordingIntake();
    const r = queueDsn(intake, input({ envelopeFrom: "" }));
    expect(r).toEqual({ skipped: "null sender" });
    expect(got).toHaveLength(0);
  });
});
