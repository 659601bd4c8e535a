/** @module test/api/fixture — an outpost runtime for API tests: its app (for app.handle), its listener, keys and users. */
import { createKey } from "../../src/auth/keys.ts";
import { addUser } from "../../src/auth/users.ts";
import { createApp, type App } from "../../src/api/app.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { secretFrom, startRuntime, tempDir, testConfig } from "../helpers/harness.ts";

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

export const MIME =
  "From: Ann <ann@example.com>\r\nTo: Bob <bob@example.org>, carol@example.net\r\nCc: dave@example.org\r\n" +
  "Bcc: eve@example.com\r\nSubject: Hello\r\nMessage-ID: <fixed@example.com>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHi there.\r\n";

/** The stored MIME of a message (the queue's own table, read for assertions only). */
export function storedBody(rt: Runtime, id: string): string {
  const row = rt.store.sqlite.query<{ body: Uint8Array }, [string]>("SELECT body FROM messages WHERE id = ?").get(id);
  if (!row) throw new Error(`no message ${id}`);
  return Buffer.from(row.body).toString("utf8");
}

export interface ErrorJson {
  error: { code: string; message: string; field: string | null };
}

export async function errorOf(res: Response): Promise<ErrorJson["error"] & { status: number }> {
  const j = (await res.json()) as ErrorJson;
  return { status: res.status, ...j.error };
}
