/** inlinizecss end to end: through POST /v1/send and over SMTP with X-Outpost-Inline-CSS, the stored copy is inlined. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { startApi, storedBody, type ApiFixture } from "../api/fixture.ts";

let f: ApiFixture;
beforeAll(async () => {
  f = await startApi(`[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n`);
});
afterAll(() => f.stop());

const HTML =
  "<html><head><style>p.lead { color: #c00; font-size: 18px } a:hover { color: blue } " +
  "@media (max-width: 600px) { p.lead { font-size: 14px } }</style></head>" +
  '<body><p class="lead">Hello &amp; welcome</p><p>Caf\u00e9</p></body></html>';

const MIME = [
  "From: ann@example.com",
  "To: bob@example.org",
  "Subject: inline me",
  "MIME-Version: 1.0",
  'Content-Type: multipart/alternative; boundary="alt"',
  "",
  "--alt",
  "Content-Type: text/plain; charset=utf-8",
  "",
  "Hello & welcome  p.lead { color: #c00 }",
  "--alt",
  "Content-Type: text/html; charset=utf-8",
  "Content-Transfer-Encoding: 8bit",
  "",
  HTML,
  "--alt--",
  "",
].join("\r\n");

async function send(fields: Record<string, unknown>): Promise<string> {
  const res = await f.call("POST", "/v1/send", { envelope: "ann@example.com", recipient: "bob@example.org", body: MIME, ...fields });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

/** the stored HTML part's text, between its header block and the closing boundary */
const htmlPart = (stored: string) => stored.slice(stored.indexOf("8bit\r\n\r\n") + 8, stored.indexOf("\r\n--alt--"));

describe("inlinizecss", () => {
  test("through the API, the stored HTML part has its styles inlined; media queries and :hover stay in <style>", async () => {
    const id = await send({ inlinizecss: true });
    const stored = storedBody(f.rt, id);
    const html = htmlPart(stored);
    expect(html).toContain('<p class="lead" style="color: #c00; font-size: 18px;">Hello &amp; welcome</p>');
    const style = /<style>([^]*)<\/style>/.exec(html)![1]!;
    expect(style).toContain("@media (max-width: 600px) {\r\n  p.lead {\r\n    font-size: 14px;");
    expect(style).toContain("a:hover {\r\n  color: blue;");
    expect(html).not.toMatch(/<style>[^<]*p\.lead \{ color: #c00/);
    expect(html).toContain("<p>Café</p>");
    // the text part and the headers are untouched
    expect(stored).toContain("\r\n\r\nHello & welcome  p.lead { color: #c00 }\r\n--alt\r\n");
    expect(stored).toContain("Subject: inline me\r\n");
  });

  test("GET /v1/messages/{id} reports the size of the inlined copy", async () => {
    const id = await send({ inlinizecss: "yes" });
    const res = await f.call("GET", `/v1/messages/${id}`);
    const m = (await res.json()) as { size: number; options: { inlinizecss: boolean } };
    expect(m.options.inlinizecss).toBe(true);
    expect(m.size).toBe(Buffer.byteLength(storedBody(f.rt, id)));
    expect(m.size).not.toBe(Buffer.byteLength(MIME));
  });

  test("without inlinizecss the HTML is stored as sent", async () => {
    const id = await send({ inlinizecss: false });
    expect(htmlPart(storedBody(f.rt, id))).toBe(HTML);
  });

  test("over SMTP, X-Outpost-Inline-CSS: yes inlines the stored copy and the header is removed", async () => {
    const t = nodemailer.createTransport({ host: "127.0.0.1", port: f.rt.smtp!.addresses()[0]!.port, secure: false, ignoreTLS: true });
    const info = await t.sendMail({
      envelope: { from: "ann@example.com", to: ["bob@example.org"] },
      raw: MIME.replace("Subject: inline me\r\n", "Subject: inline me\r\nX-Outpost-Inline-CSS: yes\r\n"),
    });
    t.close();
    const id = /queued as (\S+)/.exec(info.response)![1]!;
    const stored = storedBody(f.rt, id);
    expect(stored).not.toMatch(/X-Outpost-Inline-CSS/i);
    expect(htmlPart(stored)).toContain('<p class="lead" style="color: #c00; font-size: 18px;">');
  });

  test("a message whose MIME cannot be rewritten is stored as sent, logged once with its id, and counted", async () => {
    const broken = MIME.replace("--alt--\r\n", "");
    const res = await f.call("POST", "/v1/send", { envelope: "ann@example.com", recipient: "bob@example.org", body: broken, inlinizecss: true });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    expect(storedBody(f.rt, id)).toEndWith(broken.slice(broken.indexOf("\r\n\r\n")));
    expect(f.logs.filter((l) => l.event === "inline_css_failed")).toEqual([
      expect.objectContaining({ level: "warn", queue_id: id, reason: "multipart/alternative without its closing boundary" }),
    ]);
    const metrics = await (await fetch(`${f.base}/metrics`, { headers: { authorization: `Bearer ${f.key}` } })).text();
    expect(metrics).toContain("outpost_inline_css_failures_total 1");
  });
});
