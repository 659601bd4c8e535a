/** @module test/api/fixture — an outpost runtime for API tests: its app (for app.handle), its listener, keys and users. */
import { createKey } from "../../src/auth/keys.ts";
import { addUser } from "../../src/auth/users.ts";
import { createApp, type App } from "../../src/api/app.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { QueueInspector } from "../../src/queue/inspect.ts";
import { simpleParser, type ParsedMail } from "mailparser";
import { startFakeMx, type FakeMx, type FakeMxScript, type ReceivedMessage } from "../helpers/fake-mx.ts";
import { secretFrom, startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

export interface ApiFixture {
  rt: Runtime;
  app: App;
  /** the admin's key and password (first run) */
  key: string;
  password: string;
  /** base URL of the real listener */
  base: string;
  /** every JSON log line the runtime wrote, parsed */
  logs: Record<string, unknown>[];
  /** another user with their own key; `domains` are their allowed sender domains */
  addUser(name: string, domains?: string[]): Promise<string>;
  /** app.handle on a path with the admin key (or `key`), JSON body when `body` is an object */
  call(method: string, path: string, body?: unknown, opts?: { key?: string | null; headers?: Record<string, string> }): Promise<Response>;
  stop(): Promise<void>;
}

/** Delivery runs in sandbox (nothing leaves), SMTP listens on a free port, HTTP on another. */
export async function startApi(toml = ""): Promise<ApiFixture> {
  const d = tempDir("outpost-api-");
  let snippet = toml;
  if (!/^\s*\[delivery\]/m.test(snippet)) snippet += `\n[delivery]\nsandbox = true\n`;
  if (!/^\s*\[http\]/m.test(snippet)) snippet += `\n[http]\nlisten = "127.0.0.1:0"\n`;
  if (!/^\s*\[smtp\]/m.test(snippet)) snippet += `\n[smtp]\nlisten = ["127.0.0.1:0"]\n`;
  const logs: Record<string, unknown>[] = [];
  const { rt, firstRun } = await startRuntime(testConfig(d.path, snippet), createLogger("info", (line) => logs.push(JSON.parse(line))));
  const app = createApp(rt);
  const key = secretFrom(firstRun, "api key");
  return {
    rt,
    app,
    key,
    password: secretFrom(firstRun, "password"),
    base: `http://127.0.0.1:${rt.http!.port}`,
    logs,
    async addUser(name, domains = []) {
      const user = await addUser(rt.store.db, name, "pw-" + name, domains);
      return createKey(rt.store.db, user.id, "test").key;
    },
    call(method, path, body, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const k = opts.key === undefined ? key : opts.key;
      if (k) headers.authorization = `Bearer ${k}`;
      let payload: string | URLSearchParams | FormData | undefined;
      if (typeof body === "string" || body instanceof URLSearchParams || body instanceof FormData) payload = body;
      else if (body !== undefined) {
        payload = JSON.stringify(body);
        headers["content-type"] ??= "application/json";
      }
      // as an HTTP client sends a body it has whole (a Request made here has none of its own; FormData and
      // URLSearchParams bodies go without, as a streamed upload would)
      if (typeof payload === "string") headers["content-length"] ??= String(Buffer.byteLength(payload));
      // Elysia finds the path after the host, so the URL needs a real-looking host
      return app.handle(new Request(`http://localhost${path}`, { method, headers, body: payload }));
    },
    async stop() {
      await rt.stop();
      d.cleanup();
    },
  };
}

/** Where tracked links and pixels point when a test asks for tracking. */
export const TRACK_URL = "http://track.example";

/**
 * An API runtime whose mail really leaves, by a static route, to a fake MX on 127.0.0.2 following `script`;
 * `delivery` adds [delivery] keys, and `tracking` sets http.public_url to {@link TRACK_URL}.
 */
export async function startApiToMx(
  opts: { script?: FakeMxScript; delivery?: string; tracking?: boolean } = {},
): Promise<{ f: ApiFixture; mx: FakeMx; stop(): Promise<void> }> {
  const mx = await startFakeMx({ host: "127.0.0.2", ...opts.script });
  const http = opts.tracking ? `[http]\nlisten = "127.0.0.1:0"\npublic_url = "${TRACK_URL}"\n` : "";
  const f = await startApi(
    `${http}[delivery]\n${opts.delivery ?? ""}\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n`,
  );
  return {
    f,
    mx,
    async stop() {
      await f.stop();
      await mx.stop();
    },
  };
}

/**
 * The copies `mx` got of the message whose Subject is `subject`, once they hold `recipients` envelope
 * recipients in all (tracked mail goes out one copy per recipient), and the first copy parsed.
 */
export async function arrivedAt(mx: FakeMx, subject: string, recipients = 1): Promise<{ msg: ReceivedMessage; to: string[]; mail: ParsedMail }> {
  const copies = await waitFor(async () => {
    const found: ReceivedMessage[] = [];
    for (const m of mx.messages) if ((await simpleParser(m.raw)).subject === subject) found.push(m);
    return found.flatMap((m) => m.to).length >= recipients ? found : null;
  }, 10_000, `"${subject}" to arrive`);
  return { msg: copies[0]!, to: copies.flatMap((m) => m.to).sort(), mail: await simpleParser(copies[0]!.raw) };
}

/** GET /v1/messages?`query` with the admin key: the listed messages (throws unless 200). */
export async function listedMessages(f: ApiFixture, query: string): Promise<Record<string, unknown>[]> {
  const res = await f.call("GET", `/v1/messages?${query}`);
  if (res.status !== 200) throw new Error(`GET /v1/messages?${query}: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { messages: Record<string, unknown>[] }).messages;
}

export const MIME =
  "From: Ann <ann@example.com>\r\nTo: Bob <bob@example.org>, carol@example.net\r\nCc: dave@example.org\r\n" +
  "Bcc: eve@example.com\r\nSubject: Hello\r\nMessage-ID: <fixed@example.com>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHi there.\r\n";

/** The stored MIME of a message (the queue's own table, read for assertions only). */
export function storedBody(rt: Runtime, id: string): string {
  const body = new QueueInspector(rt.store.sqlite).storedMessage(id);
  if (!body) throw new Error(`no message ${id}`);
  return body.toString("utf8");
}

export interface ErrorJson {
  error: { code: string; message: string; field: string | null };
}

export async function errorOf(res: Response): Promise<ErrorJson["error"] & { status: number }> {
  const j = (await res.json()) as ErrorJson;
  return { status: res.status, ...j.error };
}
