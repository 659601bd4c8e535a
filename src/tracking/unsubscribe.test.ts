import { describe, expect, test } from "bun:test";
import { simpleParser } from "mailparser";
import { listUnsubscribeFields, withListUnsubscribe } from "./unsubscribe.ts";

const URL = "https://mail.example.com/t/u/01m89dg5c4b2fmgc302z01m89dg5c4j6et0rtw8zAbCdEfGhIjKlMnOpQrStUv";
const msg = (head: string, body = "Hello.\r\n") => Buffer.from(`${head}\r\n${body}`, "latin1");
const PLAIN = "From: News <news@app.example>\r\nTo: bob@example.org\r\nSubject: Weekly\r\n";

describe("listUnsubscribeFields", () => {
  test("a message without its own gets our link and RFC 8058 one-click", () => {
    expect(listUnsubscribeFields(PLAIN, URL)).toEqual({
      remove: ["List-Unsubscribe", "List-Unsubscribe-Post"],
      add: [`List-Unsubscribe: <${URL}>\r\n`, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"],
    });
  });

  test("the sender's mailto: is kept after ours; its own https URI and Post field give way", () => {
    const head = PLAIN +
      "List-Unsubscribe: <mailto:unsub@app.example?subject=stop>, <https://app.example/u/1>\r\n" +
      "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    expect(listUnsubscribeFields(head, URL).add).toEqual([
      `List-Unsubscribe: <${URL}>,\r\n <mailto:unsub@app.example?subject=stop>\r\n`,
      "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    ]);
  });

  test("folded fields, comments, case and repeats: each mailto once, as written without whitespace", () => {
    const head = PLAIN +
      "list-unsubscribe: (stop it) <MAILTO:Unsub@App.example>,\r\n\t<mailto:other@app.example\r\n ?subject=x>\r\n" +
      "List-Unsubscribe: <MAILTO:Unsub@App.example>\r\n";
    expect(listUnsubscribeFields(head, URL).add[0]).toBe(`List-Unsubscribe: <${URL}>,\r\n <MAILTO:Unsub@App.example>,\r\n <mailto:other@app.example?subject=x>\r\n`);
  });

  test("an http:// public_url gets the link but no one-click field (RFC 8058 wants HTTPS)", () => {
    expect(listUnsubscribeFields(PLAIN, "http://127.0.0.1:8025/t/u/x").add).toEqual(["List-Unsubscribe: <http://127.0.0.1:8025/t/u/x>\r\n"]);
  });

  test("only the header block is read: a List-Unsubscribe line in the body is text", () => {
    const whole = msg(PLAIN, "List-Unsubscribe: <mailto:body@app.example>\r\n");
    expect(listUnsubscribeFields(whole, URL).add[0]).toBe(`List-Unsubscribe: <${URL}>\r\n`);
  });

  test("a URL that could break the header is refused", () => {
    for (const bad of [`${URL}\r\nBcc: x@evil.example`, `${URL}>, <https://evil.example`, "javascript:alert(1)", ""]) {
      expect(() => listUnsubscribeFields(PLAIN, bad)).toThrow(RangeError);
    }
  });
});

describe("withListUnsubscribe", () => {
  test("replaces the fields and keeps every other byte; a MIME parser reads both URIs", async () => {
    const body = "--b\r\nContent-Type: text/plain\r\n\r\nHi \xe9\r\n--b--\r\n";
    const head = "From: news@app.example\r\nList-Unsubscribe: <mailto:u@app.example>\r\nSubject: S\r\nContent-Type: multipart/alternative; boundary=b\r\n";
    const out = withListUnsubscribe(msg(head, body), URL);
    const text = out.toString("latin1");
    expect(text).toBe(
      "From: news@app.example\r\nSubject: S\r\nContent-Type: multipart/alternative; boundary=b\r\n" +
        `List-Unsubscribe: <${URL}>,\r\n <mailto:u@app.example>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n${body}`,
    );
    const parsed = await simpleParser(out);
    expect(parsed.headers.get("list")).toEqual({ unsubscribe: { url: URL, mail: "u@app.example" }, "unsubscribe-post": { name: "List-Unsubscribe=One-Click" } });
  });
});
