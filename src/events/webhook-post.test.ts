import { afterEach, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { postWebhook, signRequest, signature } from "./webhook-post.ts";

const EVENT = { id: "42", type: "delivered" as const, time: "2026-01-01T00:00:00.000Z", message_id: "m", recipient: "a@b.test", tag: null, metadata: {}, details: {} };
let cleanup: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const c of cleanup) await c();
  cleanup = [];
});

/**
 * A listener whose accept queue is full (backlog 0, filled, never accepting): the kernel drops further SYNs, so a
 * connection attempt hangs as it does towards a host that drops packets.
 */
async function unconnectable(): Promise<number> {
  const script = `
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", s.getsockname()[1]))
    except BlockingIOError: pass
    fill.append(c)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;
  const p: Subprocess<"pipe", "pipe", "inherit"> = Bun.spawn(["python3", "-c", script], { stdin: "pipe", stdout: "pipe" });
  cleanup.push(() => {
    p.kill();
  });
  const reader = p.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  return Number(new TextDecoder().decode(value).trim());
}

test("the signature is HMAC-SHA256 of the raw body, hex, after sha256=", () => {
  // python3 -c 'import hmac,hashlib; print(hmac.new(b"key", b"The quick brown fox jumps over the lazy dog", hashlib.sha256).hexdigest())'
  expect(signature("key", "The quick brown fox jumps over the lazy dog")).toBe(
    "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
  );
  const req = signRequest("key", EVENT, 1_767_225_600_999);
  expect(req.body).toBe(JSON.stringify(EVENT));
  expect(req.headers).toMatchObject({ "x-outpost-timestamp": "1767225600", "x-outpost-event-id": "42", "x-outpost-signature": signature("key", req.body) });
});

test("a receiver that cannot be reached fails at the connect deadline, long before the total one", async () => {
  const port = await unconnectable();
  const result = await postWebhook(`http://127.0.0.1:${port}/h`, signRequest("k", EVENT, 0), { connectMs: 300, totalMs: 20_000 });
  expect(result).toEqual({ status: null, error: "no connection within 0.3 s" });
});

test("a receiver that connects at once may take longer than the connect deadline to answer", async () => {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async () => (await Bun.sleep(600), new Response("late but fine", { status: 202 })) });
  cleanup.push(() => server.stop(true));
  const result = await postWebhook(`http://127.0.0.1:${server.port}/h`, signRequest("k", EVENT, 0), { connectMs: 200, totalMs: 5_000 });
  expect(result).toEqual({ status: 202, body: "late but fine" });
});

test("a refused connection is reported as such", async () => {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
  const port = server.port;
  await server.stop(true);
  const result = await postWebhook(`http://127.0.0.1:${port}/h`, signRequest("k", EVENT, 0));
  expect(result.status).toBeNull();
  expect(result.status === null && result.error).toMatch(/ECONNREFUSED|refused/i);
});

test("a large answer is cut at 4 KB and not waited for", async () => {
  const server = Bun.serve({
    hostname: "127.0.0.1", port: 0,
    fetch: () => new Response(new ReadableStream({ pull: async (c) => (await Bun.sleep(5), c.enqueue(new Uint8Array(1024).fill(120))) }), { status: 500 }),
  });
  cleanup.push(() => server.stop(true));
  const result = await postWebhook(`http://127.0.0.1:${server.port}/h`, signRequest("k", EVENT, 0), { connectMs: 1000, totalMs: 3000 });
  expect(result.status).toBe(500);
  expect(result.status !== null && result.body.length).toBe(4096);
});
