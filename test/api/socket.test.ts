/**
 * The real listener: curl and fetch with JSON, urlencoded and multipart bodies, and a message sent over the API
 * landing in the queue exactly like the same message sent over SMTP.
 */
import { afterAll, beforeAll, describe, expect, test as bunTest } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { requestLimits } from "../../src/api/context.ts";
import { tempDir, waitFor } from "../helpers/harness.ts";
import { MIME, startApi, storedBody, type ApiFixture } from "./fixture.ts";

let f: ApiFixture;
const files = tempDir("outpost-api-files-");
beforeAll(async () => {
  f = await startApi();
});
afterAll(async () => {
  await f.stop();
  files.cleanup();
});

/** Runs a child without blocking the event loop (the server under test lives in this process). */
async function run(cmd: string[], stdin?: Buffer): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdin: stdin ?? "ignore", stdout: "pipe", stderr: "pipe", timeout: 15_000 });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

async function curl(args: string[]): Promise<{ status: number; body: string }> {
  const p = await run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", ...args]);
  if (p.code !== 0) throw new Error(`curl failed: ${p.err}`);
  const out = p.out;
  const nl = out.lastIndexOf("\n");
  return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
}

const rcpts = (body: string) => (JSON.parse(body) as { recipients: { address: string; id: string; status: string }[] }).recipients;

const hasCurl = Bun.which("curl") !== null;
const hasPython = Bun.which("python3") !== null;

describe(hasCurl ? "curl" : "curl (skipped: curl is not installed)", () => {
  const test = hasCurl ? bunTest : bunTest.skip;
  test("sends JSON with a Bearer key", async () => {
    const r = await curl(["-H", `Authorization: Bearer ${f.key}`, "-H", "Content-Type: application/json", "--data-binary",
      JSON.stringify({ envelope: "ann@example.com", recipient: "bob@example.org", body: MIME }), `${f.base}/v1/send`]);
    expect(r.status).toBe(202);
    expect(rcpts(r.body)).toEqual([{ address: "bob@example.org", id: expect.any(String), status: "queued" }]);
  });

  test("sends an urlencoded form with ?access_token", async () => {
    const r = await curl(["--data-urlencode", "envelope=ann@example.com", "--data-urlencode", "recipient=a@example.org",
      "--data-urlencode", "recipient=b@example.org", "--data-urlencode", `body=${MIME}`, `${f.base}/v1/send?access_token=${f.key}`]);
    expect(r.status).toBe(202);
    expect(rcpts(r.body).map((x) => x.address)).toEqual(["a@example.org", "b@example.org"]);
  });

  test("sends multipart with the message and an attachment as file parts", async () => {
    const eml = join(files.path, "message.eml");
    const pdf = join(files.path, "report.pdf");
    writeFileSync(eml, MIME);
    writeFileSync(pdf, "%PDF-1.4 fake");
    const r1 = await curl(["-H", `Authorization: Bearer ${f.key}`, "-F", "envelope=ann@example.com", "-F", "recipient=bob@example.org",
      "-F", `body=@${eml};type=message/rfc822`, `${f.base}/v1/send`]);
    expect(r1.status).toBe(202);
    const r2 = await curl(["-H", `Authorization: Bearer ${f.key}`, "-F", "Envelope=ann@example.com", "-F", "to=bob@example.org",
      "-F", "subject=report", "-F", "text=see attached", "-F", `attachment=@${pdf};type=application/pdf`,
      // a type no file name would give: it must come from the part itself
      "-F", `attachment=@${pdf};type=text/csv;filename=figures.dat`, "-F", "trackclicks=true", `${f.base}/v1/send`]);
    expect(r2.status).toBe(202);
    const id = (JSON.parse(r2.body) as { id: string }).id;
    const stored = storedBody(f.rt, id);
    expect(stored).toContain("Content-Type: application/pdf; name=report.pdf");
    expect(stored).toContain("Content-Type: text/csv; name=figures.dat");
    expect(stored).toContain(Buffer.from("%PDF-1.4 fake").toString("base64"));
  });

  test("an error is JSON with the status", async () => {
    const r = await curl(["-H", `Authorization: Bearer ${f.key}`, "-H", "Content-Type: application/json", "--data-binary", "{}", `${f.base}/v1/send`]);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toEqual({ error: { code: "invalid_request", message: expect.any(String), field: "from" } });
  });

  test("an announced body too large is refused with a JSON 413 before it is read, however large", async () => {
    const limits = requestLimits(f.rt.config.smtp.max_message_size);
    for (const [type, announced] of [["multipart/form-data; boundary=x", limits.multipart + 1], ["application/json", 10_000_000_000]] as const) {
      const r = await curl(["-H", `Authorization: Bearer ${f.key}`, "-H", `Content-Type: ${type}`, "-H", `Content-Length: ${announced}`,
        "--data-binary", "--x--", `${f.base}/v1/send`]);
      expect(r.status).toBe(413);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: "too_large", field: "body" } });
    }
  });
});

describe("fetch", () => {
  const test = bunTest;
  const auth = () => ({ authorization: `Bearer ${f.key}` });

  test("sends JSON", async () => {
    const res = await fetch(`${f.base}/v1/send`, { method: "POST", headers: { ...auth(), "content-type": "application/json" },
      body: JSON.stringify({ envelope: "ann@example.com", to: "bob@example.org", subject: "fetch", html: "<b>hi</b>" }) });
    expect(res.status).toBe(202);
  });

  test("sends urlencoded", async () => {
    const res = await fetch(`${f.base}/v1/send`, { method: "POST", headers: auth(),
      body: new URLSearchParams({ envelope: "ann@example.com", recipients: "a@example.org,b@example.org", mime: MIME }) });
    expect(res.status).toBe(202);
    expect(rcpts(await res.text()).length).toBe(2);
  });

  test("sends multipart", async () => {
    const form = new FormData();
    form.append("envelope", "ann@example.com");
    form.append("to", "bob@example.org");
    form.append("text", "hello");
    form.append("attachments", new File(["a,b\n1,2\n"], "data.csv", { type: "text/csv" }));
    const res = await fetch(`${f.base}/v1/send`, { method: "POST", headers: auth(), body: form });
    expect(res.status).toBe(202);
  });

  test("the Received line names the client address", async () => {
    const res = await fetch(`${f.base}/v1/send`, { method: "POST", headers: { ...auth(), "content-type": "application/json" },
      body: JSON.stringify({ envelope: "ann@example.com", recipient: "bob@example.org", body: MIME }) });
    const { id } = (await res.json()) as { id: string };
    expect(storedBody(f.rt, id)).toMatch(/^Received: from \[(::ffff:)?127\.0\.0\.1\]\r\n\tby outpost\.test \(outpost\) with HTTP;/);
  });
});

describe(hasPython ? "API and SMTP land as the same queue rows" : "API and SMTP rows (skipped: python3 is not installed)", () => {
  const test = hasPython ? bunTest : bunTest.skip;
  interface Row {
    [k: string]: unknown;
  }
  const message = (id: string) => f.rt.store.sqlite.query<Row, [string]>("SELECT * FROM messages WHERE id = ?").get(id)!;
  const recipients = (id: string) =>
    f.rt.store.sqlite.query<Row, [string]>("SELECT address, domain FROM recipients WHERE message_id = ? ORDER BY rowid").all(id);
  const eventTypes = (id: string) =>
    f.rt.store.sqlite.query<{ type: string; recipient: string }, [string]>("SELECT type, recipient FROM events WHERE message_id = ? ORDER BY id").all(id);
  /** everything after our own Received line, which names the hop (SMTP: HELO and IP; HTTP: IP) */
  const afterReceived = (body: Buffer) => {
    const s = Buffer.from(body).toString("latin1");
    expect(s.startsWith("Received: ")).toBe(true);
    return s.slice(s.search(/\r\n(?![ \t])/) + 2);
  };

  test("one message sent both ways is stored identically but for id, time, source and the Received line", async () => {
    const eml = Buffer.from(MIME);
    const py = [
      "import smtplib, sys",
      `s = smtplib.SMTP('127.0.0.1', ${f.rt.smtp!.addresses()[0]!.port}, timeout=10)`,
      `s.login('admin', sys.argv[1])`,
      "s.sendmail('ann@example.com', ['bob@example.org', 'carol@example.net'], sys.stdin.buffer.read())",
      "s.quit()",
    ].join("\n");
    const smtp = await run(["python3", "-c", py, f.password], eml);
    expect(smtp.err).toBe("");
    expect(smtp.code).toBe(0);
    const smtpId = f.rt.store.sqlite.query<{ id: string }, []>("SELECT id FROM messages WHERE source = 'smtp' ORDER BY created_at DESC LIMIT 1").get()!.id;

    const res = await fetch(`${f.base}/v1/send`, { method: "POST", headers: { authorization: `Bearer ${f.key}`, "content-type": "application/json" },
      body: JSON.stringify({ envelope: "ann@example.com", recipient: ["bob@example.org", "carol@example.net"], body: MIME }) });
    expect(res.status).toBe(202);
    const apiId = ((await res.json()) as { id: string }).id;

    const a = message(apiId);
    const s = message(smtpId);
    expect(afterReceived(a.body as Buffer)).toBe(afterReceived(s.body as Buffer));
    const strip = (r: Row, body: Buffer) => {
      const { id: _id, created_at: _c, source: _s, body: _b, size, ...rest } = r;
      return { ...rest, sizeAfterReceived: (size as number) - (Buffer.from(body).length - afterReceived(body).length) };
    };
    expect(strip(a, a.body as Buffer)).toEqual(strip(s, s.body as Buffer));
    expect(a.source).toBe("api");
    expect(s.source).toBe("smtp");
    expect(recipients(apiId)).toEqual(recipients(smtpId));
    await waitFor(() => eventTypes(apiId).length === 4 && eventTypes(smtpId).length === 4, 5000, "sandbox delivery of both");
    expect(eventTypes(apiId)).toEqual(eventTypes(smtpId));
  });
});
