import { expect, test } from "bun:test";
import type { SMTPServerSession } from "smtp-server";
import { prepareMessage } from "../intake/prepare.ts";
import { isKnownCrlf, LineEndWriter } from "../message/line-ends.ts";
import { HEADER_ROOM, receivedHeader } from "./data.ts";

function session(over: Partial<SMTPServerSession>): SMTPServerSession {
  return {
    id: "x", localAddress: "127.0.0.1", localPort: 25, remoteAddress: "192.0.2.7", remotePort: 40000,
    clientHostname: "[192.0.2.7]", openingCommand: "EHLO", hostNameAppearsAs: "client.example",
    envelope: { mailFrom: false, rcptTo: [] }, secure: false, transmissionType: "ESMTP", tlsOptions: false,
    xClient: new Map(), xForward: new Map(), transaction: 1, ...over,
  };
}

const when = new Date("2026-11-25T12:00:00Z");

test("the Received line names the client's EHLO name and IP, our host, protocol and TLS", () => {
  const s = session({ secure: true, transmissionType: "ESMTPSA", tlsOptions: { name: "TLS_AES_256_GCM_SHA384", standardName: "TLS_AES_256_GCM_SHA384", version: "TLSv1.3" } });
  expect(receivedHeader(s, "mx.example.com", when).toString()).toBe(
    "Received: from client.example ([192.0.2.7])\r\n\tby mx.example.com (outpost) with ESMTPSA (TLSv1.3 TLS_AES_256_GCM_SHA384);\r\n\tWed, 25 Nov 2026 12:00:00 +0000\r\n",
  );
});

test("a hostile EHLO name cannot break out of the Received line or its comment", () => {
  const line = receivedHeader(session({ hostNameAppearsAs: "evil)(x\u00e9\u0007" }), "mx.example.com", when).toString();
  expect(line).toStartWith("Received: from evil??x?? ([192.0.2.7])\r\n");
  expect(line.split("\r\n")).toHaveLength(4);
});

test("a message received over SMTP comes out of intake's preparation known to be in CRLF, so delivery does not scan it again", () => {
  const s = session({});
  for (const text of ["Subject: hi\nFrom: a@x.test\n\nbody\n.dot\n", "Subject: no Date, no Message-ID\r\n\r\nbody\r\n"]) {
    const w = new LineEndWriter(4096, HEADER_ROOM);
    w.write(Buffer.from(text));
    const prepared = prepareMessage(w.finish(), "relay.example", { trace: receivedHeader(s, "relay.example", when), room: HEADER_ROOM });
    expect(prepared.body.toString("latin1")).not.toMatch(/\r(?!\n)|(?<!\r)\n/);
    expect(isKnownCrlf(prepared.body)).toBe(true);
  }
});
