import { describe, expect, test } from "bun:test";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import DataStream from "nodemailer/lib/smtp-connection/data-stream.js";
import { has8bit, headerHas8bit, localReply, nonAscii, outcomeOf, parseReply, stuffDots } from "./attempt.ts";

describe("parseReply and outcomeOf", () => {
  test.each([
    ["250 2.0.0 Ok: queued as 1234", 250, "2.0.0", "delivered"],
    ["250 ok", 250, "2.0.0", "delivered"],
    ["450 4.2.0 mailbox busy", 450, "4.2.0", "deferred"],
    ["451 try later", 451, "4.0.0", "deferred"],
    ["421 4.7.0 too many connections", 421, "4.7.0", "deferred"],
    ["452 4.5.3 too many recipients", 452, "4.5.3", "deferred"],
    ["550 5.1.1 <bad@x.test>: no such user", 550, "5.1.1", "bounced"],
    ["554 5.7.1 rejected as spam", 554, "5.7.1", "bounced"],
    ["552 5.3.4 message too big", 552, "5.3.4", "bounced"],
    // an enhanced code whose class disagrees with the basic code is not trusted
    ["550 4.1.1 confused server", 550, "5.0.0", "bounced"],
    ["550-5.1.1 first line\n550 5.1.1 second line", 550, "5.1.1", "bounced"],
    ["garbage", 0, "4.4.1", "deferred"],
    ["354 go ahead", 354, "4.0.0", "deferred"],
  ])("%j → %i %s %s", (raw, code, enhanced, outcome) => {
    const r = parseReply(raw);
    expect([r.code, r.enhanced, outcomeOf(r)]).toEqual([code, enhanced, outcome]);
    expect(r.text).toBe(raw);
  });

  test("a local failure is deferred unless its enhanced code is permanent", () => {
    expect(outcomeOf(localReply("socket closed"))).toBe("deferred");
    expect(localReply("socket closed").code).toBe(0);
    expect(outcomeOf(localReply("NUL byte", "5.6.0"))).toBe("bounced");
  });
});

describe("what a message needs from the server", () => {
  test("has8bit finds bytes ≥ 0x80 only", () => {
    expect(has8bit(Buffer.from("plain ascii\r\n"))).toBe(false);
    expect(has8bit(Buffer.from("caf\u00e9"))).toBe(true);
    expect([has8bit(Buffer.alloc(0)), has8bit(Buffer.from([0x7f])), has8bit(Buffer.from([0x41, 0x80]))]).toEqual([false, false, true]);
  });

  test("headerHas8bit looks only before the blank line that ends the header block", () => {
    expect(headerHas8bit(Buffer.from("Subject: caf\u00e9\r\n\r\nascii\r\n"))).toBe(true);
    expect(headerHas8bit(Buffer.from("Subject: plain\r\n\r\ncaf\u00e9\r\n"))).toBe(false);
    expect(headerHas8bit(Buffer.from("Subject: plain\n\ncaf\u00e9\n"))).toBe(false);
    // a header block with no body at all
    expect(headerHas8bit(Buffer.from("Subject: caf\u00e9\r\n"))).toBe(true);
  });

  test("nonAscii spots internationalised addresses", () => {
    expect(nonAscii("a@x.test")).toBe(false);
    expect(nonAscii("j\u00f6rg@x.test")).toBe(true);
  });
});

describe("stuffDots (RFC 5321 §4.5.2)", () => {
  test("a dot opening a line gets a second one; the message's first byte counts as a line start", () => {
    const stuffed = (s: string, atLineStart = true) => stuffDots(Buffer.from(s), atLineStart).toString();
    expect(stuffed(".a\r\nb.\r\n.\r\n..c\r\n")).toBe("..a\r\nb.\r\n..\r\n...c\r\n");
    expect(stuffed(".\r\n.\r\n")).toBe("..\r\n..\r\n");
    expect(stuffed(".a\r\n", false)).toBe(".a\r\n");
    expect(stuffed("x\r\n.")).toBe("x\r\n..");
  });

  test("a body with no line opening with a dot is returned as it is, not copied", () => {
    const body = Buffer.from("Subject: x\r\n\r\na. b.\r\n".repeat(1000));
    expect(stuffDots(body, true)).toBe(body);
  });
});

// fastDataStream (attempt.ts) uses smtp-connection's private parts and leaves a library without them alone: a
// silent fallback to the per-byte pass. This pins them on the installed version, so an upgrade that drops them fails here.
test("the pinned smtp-connection has what the CRLF shortcut hooks into (_createSendStream, DataStream's counters)", () => {
  const stream = new DataStream() as unknown as Record<string, unknown>;
  expect(typeof (SMTPConnection.prototype as unknown as Record<string, unknown>)._createSendStream).toBe("function");
  expect({ inByteCount: typeof stream.inByteCount, hasLastByte: "lastByte" in stream, transform: typeof stream._transform })
    .toEqual({ inByteCount: "number", hasLastByte: true, transform: "function" });
});
