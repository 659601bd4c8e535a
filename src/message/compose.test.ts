import { describe, expect, test } from "bun:test";
import { composeMessage, type ComposeInput } from "./compose.ts";

const base: ComposeInput = {
  from: { name: "Ann", address: "ann@example.com" },
  to: [{ address: "bob@example.org" }],
  cc: [],
  bcc: [{ address: "hidden@example.net" }],
  subject: "Hi",
  text: "plain",
  headers: [],
  attachments: [],
};

describe("composeMessage", () => {
  test("writes From, To, Subject and a Message-ID at the hostname, and never the Bcc", async () => {
    const mime = (await composeMessage(base, "relay.test")).toString("latin1");
    expect(mime).toContain("From: Ann <ann@example.com>\r\n");
    expect(mime).toContain("To: bob@example.org\r\n");
    expect(mime).toContain("Subject: Hi\r\n");
    expect(mime).toMatch(/Message-ID: <[0-9a-f-]{36}@relay\.test>\r\n/);
    expect(mime).not.toContain("hidden@example.net");
    expect(mime).not.toMatch(/^Cc:/m);
  });

  test("keeps extra headers in order and carries attachments and inline parts as given bytes", async () => {
    const mime = (
      await composeMessage(
        {
          ...base,
          html: '<img src="cid:logo@x">',
          headers: [{ name: "X-One", value: "1" }, { name: "X-Two", value: "2" }],
          attachments: [
            { filename: "a.bin", content: Buffer.from([0, 1, 2, 255]), contentType: "application/octet-stream" },
            { content: Buffer.from("png"), contentType: "image/png", cid: "logo@x" },
          ],
        },
        "relay.test",
      )
    ).toString("latin1");
    expect(mime.indexOf("X-One: 1\r\n")).toBeLessThan(mime.indexOf("X-Two: 2\r\n"));
    expect(mime).toContain("filename=a.bin");
    expect(mime).toContain(Buffer.from([0, 1, 2, 255]).toString("base64"));
    expect(mime).toContain("Content-ID: <logo@x>");
    expect(mime).toContain("multipart/related");
  });
});
