import { expect, test } from "bun:test";
import { LineEndWriter } from "../message/line-ends.ts";
import { prepareMessage } from "./prepare.ts";

const now = new Date("2026-11-25T12:00:00Z");
const trace = Buffer.from("Received: from x ([192.0.2.7])\r\n\tby outpost.test (outpost) with ESMTP;\r\n\tWed, 25 Nov 2026 12:00:00 +0000\r\n");

/** The message as SMTP hands it over: written once, line ends normalised, room in front. */
function received(text: string, room = 8192): Buffer {
  const w = new LineEndWriter(text.length * 2, room);
  for (let i = 0; i < text.length; i += 5) w.write(Buffer.from(text.slice(i, i + 5), "latin1"));
  return w.finish();
}

/** The message as latin1 text, the Message-ID prepare makes up (random) replaced by one placeholder. */
const withoutNewId = (b: Buffer) => b.toString("latin1").replace(/<[0-9a-f-]{36}@outpost\.test>/, "<new-id>");

const MESSAGES = [
  "From: a@example.org\r\nBcc: hidden@example.org\r\nX-Outpost-Track-Opens: yes\r\nSubject: hi\r\n\r\nbody\r\n.line\r\n",
  "From: a@example.org\nMessage-ID: <x@y>\nDate: Wed, 25 Nov 2026 10:00:00 +0000\n\nbare LF\rbare CR\r\n",
  "hello world, no header block\r\n",
  "Subject: no blank line\r\nthis line ends the header block\r\n",
  "Subject: all header\r\n",
  "From alice@x.test Mon Jan  1 00:00:00 2026\r\nSubject: mbox line first\r\n\r\nbody\r\n",
  "X-Caf\xe9: odd name\r\nSubject: =?utf-8?B?SMOpbGxv?=\r\n\r\n\xff\xfe 8-bit body\r\n",
];

test("a message received with room in front is prepared in place: the same bytes as a copy, in the message's own memory", () => {
  for (const text of MESSAGES) {
    const copy = prepareMessage(Buffer.from(text, "latin1"), "outpost.test", { trace, now });
    const raw = received(text);
    const inPlace = prepareMessage(raw, "outpost.test", { trace, now, room: 8192 });
    expect(withoutNewId(inPlace.body), JSON.stringify(text)).toBe(withoutNewId(copy.body));
    expect([inPlace.subject, inPlace.received, inPlace.headerOptions]).toEqual([copy.subject, copy.received, copy.headerOptions]);
    // no copy of the message: the prepared bytes lie in the buffer it was received into (except the mbox line, which
    // is prefixed, and a message that is all header: both copied as before)
    const shared = inPlace.body.buffer === raw.buffer;
    expect(shared, JSON.stringify(text)).toBe(!text.startsWith("From alice") && text !== "Subject: all header\r\n");
  }
});

test("without enough room the header block is not squeezed in: the message is copied instead", () => {
  const raw = received("Subject: x\r\n\r\nbody\r\n", 0);
  const p = prepareMessage(raw, "outpost.test", { trace, now, room: 0 });
  expect(p.body.buffer).not.toBe(raw.buffer);
  expect(p.body.toString()).toStartWith(trace.toString());
  expect(p.body.toString()).toEndWith("\r\n\r\nbody\r\n");
});

test("an option header with a word other than yes/no, or given twice, is refused 554 5.6.0 instead of falling back to the default", () => {
  const prepare = (head: string) => () => prepareMessage(Buffer.from(`${head}Subject: s\r\n\r\nbody\r\n`, "latin1"), "outpost.test", { now });
  expect(prepare("X-Outpost-Track-Clicks: maybe\r\n")).toThrow(expect.objectContaining({ code: 554, enhanced: "5.6.0", field: "body" }));
  expect(prepare("X-Outpost-Track-Clicks: no\r\nX-Outpost-Track-Clicks: yes\r\n")).toThrow(expect.objectContaining({ code: 554, enhanced: "5.6.0" }));
  expect(prepare("X-Outpost-Track-Clicks: No \r\n")().headerOptions).toEqual({ trackClicks: false });
  expect(prepare("X-Outpost-Track-Opens: off\r\n")().headerOptions).toEqual({ trackOpens: false });
});
