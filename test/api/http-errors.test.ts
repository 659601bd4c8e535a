/**
 * Errors at the HTTP level, through the real listener with curl where the client's own behaviour matters: body
 * types (415, JSON sent as a form), wrong methods (405 with Allow), sizes (413 JSON, streamed bodies included,
 * 411), unknown query parameters; every one with the JSON error body of docs/api.md.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../helpers/harness.ts";
import { hasCommand, run } from "../smtp/fixture.ts";
import { errorOf, startApi, type ApiFixture } from "./fixture.ts";

let f: ApiFixture;
const files = tempDir("outpost-http-errors-");
beforeAll(async () => {
  f = await startApi(`[smtp]\nmax_message_size = "64KB"\n`);
});
afterAll(async () => {
  await f.stop();
  files.cleanup();
});

interface Answer {
  status: number;
  headers: string;
  error: { code: string; message: string; field: string | null };
}

/** curl with the key; the answer's status, raw headers and JSON error body. */
async function curl(args: string[]): Promise<Answer> {
  const r = await run(["curl", "-sS", "--max-time", "10", "-D", "-", "-H", `Authorization: Bearer ${f.key}`, ...args]);
  if (r.code !== 0) throw new Error(`curl failed: ${r.stderr}`);
  const [headers, body] = r.stdout.split(/\r\n\r\n(?=[^]*$)/);
  return { status: Number(/^HTTP\/\S+ (\d+)/.exec(headers!)![1]), headers: headers!, error: (JSON.parse(body!) as { error: Answer["error"] }).error };
}

describe.skipIf(!hasCommand("curl"))("body types", () => {
  test("a body without a Content-Type is a 415 listing the accepted types", async () => {
    const a = await curl(["-H", "Content-Type:", "--data-binary", '{"from":"a@example.com"}', `${f.base}/v1/send`]);
    expect(a.status).toBe(415);
    expect(a.error).toMatchObject({ code: "unsupported_media_type", field: null });
    expect(a.error.message).toBe("no Content-Type: send application/json, application/x-www-form-urlencoded or multipart/form-data");
  });

  test("JSON sent with curl -d and no -H is a 400 saying to send Content-Type: application/json", async () => {
    const a = await curl(["-d", '{"from":"ann@example.com","to":"bob@example.org","subject":"Hi","text":"a=b&c"}', `${f.base}/v1/send`]);
    expect(a.status).toBe(400);
    expect(a.error).toMatchObject({ code: "invalid_request", field: null });
    expect(a.error.message).toContain("send Content-Type: application/json");
  });

  test("the same JSON with the header is sent", async () => {
    const r = await run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", `Authorization: Bearer ${f.key}`, "-H", "Content-Type: application/json",
      "-d", '{"from":"ann@example.com","to":"bob@example.org","subject":"Hi","text":"Hello"}', `${f.base}/v1/send`]);
    expect(r.stdout).toBe("202");
  });

  test("another endpoint's body of another type is a 415 too", async () => {
    const a = await curl(["-H", "Content-Type: text/plain", "--data-binary", "gone@example.org", `${f.base}/v1/suppressions`]);
    expect(a).toMatchObject({ status: 415, error: { code: "unsupported_media_type" } });
  });
});

describe.skipIf(!hasCommand("curl"))("methods", () => {
  const cases: [string, string, string][] = [
    ["GET", "/v1/send", "POST"],
    ["DELETE", "/v1/messages", "GET"],
    ["POST", "/v1/messages/01m89dg5c4b2fmgc302z", "GET"],
    ["PUT", "/v1/suppressions", "DELETE, GET, POST"],
    ["POST", "/v1/events", "GET"],
  ];
  for (const [method, path, allow] of cases) {
    test(`${method} ${path} is a 405 with Allow: ${allow}`, async () => {
      const a = await curl(["-X", method, `${f.base}${path}`]);
      expect(a.status).toBe(405);
      expect(a.headers).toMatch(new RegExp(`^allow: ${allow}\\r?$`, "im"));
      expect(a.error).toMatchObject({ code: "method_not_allowed", field: null });
      expect(a.error.message).toContain(method);
    });
  }

  test("an unknown path is still a 404", async () => {
    expect(await curl([`${f.base}/v1/nothing-here`])).toMatchObject({ status: 404, error: { code: "not_found" } });
  });
});

describe.skipIf(!hasCommand("curl"))("sizes", () => {
  // 64 KB messages: a JSON request may be 3 × that + 64 KB (api/context.ts)
  const big = () => {
    const file = join(files.path, "big.json");
    writeFileSync(file, JSON.stringify({ from: "ann@example.com", to: "bob@example.org", text: "x".repeat(300 * 1024) }));
    return file;
  };

  test("a body sent without a Content-Length (chunked) is counted as it comes: over the limit it is a 413 with the JSON error", async () => {
    const a = await curl(["-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked", "--data-binary", `@${big()}`, `${f.base}/v1/send`]);
    expect(a).toMatchObject({ status: 413, error: { code: "too_large", field: "body" } });
  });

  test("the same body with its Content-Length is refused before it is read, the same way", async () => {
    const a = await curl(["-H", "Content-Type: application/json", "--data-binary", `@${big()}`, `${f.base}/v1/send`]);
    expect(a).toMatchObject({ status: 413, error: { code: "too_large", field: "body" } });
  });

  test("a suppression body over 64 KB is a 413, and one sent without a Content-Length a 411", async () => {
    const pad = JSON.stringify({ address: "a@example.org", pad: "x".repeat(70 * 1024) });
    const file = join(files.path, "pad.json");
    writeFileSync(file, pad);
    expect(await curl(["-H", "Content-Type: application/json", "--data-binary", `@${file}`, `${f.base}/v1/suppressions`])).toMatchObject({
      status: 413,
      error: { code: "too_large" },
    });
    const chunked = await curl(["-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked", "--data-binary", '{"address":"a@example.org"}',
      `${f.base}/v1/suppressions`]);
    expect(chunked).toMatchObject({ status: 411, error: { code: "length_required" } });
  });
});

describe("query parameters", () => {
  test("an unknown parameter on /v1/events is a 400 naming it", async () => {
    const e = await errorOf(await f.call("GET", "/v1/events?types=delivered"));
    expect(e).toMatchObject({ status: 400, code: "invalid_request", field: "types" });
    expect(e.message).toContain("since, type, message_id, limit");
  });

  test("message_id on /v1/events shows nothing of another user's message", async () => {
    const res = await f.call("POST", "/v1/send", { from: "ann@example.com", to: "bob@example.org", text: "x" });
    const { id } = (await res.json()) as { id: string };
    const other = await f.addUser("stranger");
    const page = (await (await f.call("GET", `/v1/events?message_id=${id}`, undefined, { key: other })).json()) as { events: unknown[] };
    expect(page.events).toEqual([]);
    const mine = (await (await f.call("GET", `/v1/events?message_id=${id}`)).json()) as { events: { message_id: string }[] };
    expect(mine.events.length).toBeGreaterThan(0);
    expect(new Set(mine.events.map((e) => e.message_id))).toEqual(new Set([id]));
  });

  test("an unknown suppression reason is a 400 naming reason", async () => {
    const e = await errorOf(await f.call("POST", "/v1/suppressions", { address: "x@example.org", reason: "bored" }));
    expect(e).toMatchObject({ status: 400, field: "reason" });
  });
});
