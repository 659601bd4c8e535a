/** `outpost webhook list|test|retry` as an operator runs them: a real process against a data dir with an outbox. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.ts";
import { openStore } from "../../src/db/client.ts";
import { EventRecorder } from "../../src/events/record.ts";
import { WebhookWorker } from "../../src/events/webhooks.ts";
import type { MessageId, RecipientId } from "../../src/mail/ids.ts";
import { silentLogger } from "../../src/observe/log.ts";
import { resolveWebhooks } from "../../src/runtime/webhooks.ts";
import { tempDir, type CliResult } from "../helpers/harness.ts";
import { startReceiver, type Receiver } from "../helpers/webhook-receiver.ts";

const MAIN = join(import.meta.dir, "../../src/main.ts");
let dir: { path: string; cleanup: () => void };
let configFile: string;
let receiver: Receiver;
let refusedUrl: string;

/** Runs outpost without blocking this process: the receiver answering the CLI's POST lives here. */
async function outpost(...args: string[]): Promise<CliResult> {
  const p = Bun.spawn(["bun", MAIN, ...args, "--config", configFile], { cwd: dir.path, stdout: "pipe", stderr: "pipe", env: { ...process.env, OUTPOST_LOG: "error" } });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

const outbox = () => {
  const store = openStore(loadConfig(configFile).database.path);
  try {
    return store.sqlite.query<{ hook: string; state: string | null; attempts: number; next_attempt_at: number }, []>(
      "SELECT hook, state, attempts, next_attempt_at FROM webhook_outbox ORDER BY id").all();
  } finally {
    store.close();
  }
};

beforeAll(async () => {
  dir = tempDir();
  receiver = startReceiver({ secret: "app-secret", respond: (r) => (r.event.type === "delivered" ? 200 : 500) });
  const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
  refusedUrl = `http://127.0.0.1:${closed.port}/down`;
  await closed.stop(true);
  configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = ${JSON.stringify(join(dir.path, "data"))}
hostname = "outpost.test"
[[webhook]]
name = "app"
url = "${receiver.url}"
events = ["delivered", "queued"]
secret = "app-secret"
[[webhook]]
name = "down"
url = "${refusedUrl}"
secret = "down-secret"
`);
  // an outbox with history: app took a delivered event and refused a queued one; down refused everything
  const config = loadConfig(configFile);
  const store = openStore(config.database.path);
  try {
    const hooks = resolveWebhooks(config.webhook, config.file, store.db);
    const recorder = new EventRecorder(store.sqlite, hooks);
    for (const type of ["queued", "delivered"] as const) {
      recorder.record({ type, messageId: `m-${type}` as MessageId, recipientId: "r1" as RecipientId, recipient: "a@dest.test", userId: null });
    }
    await new WebhookWorker({ sqlite: store.sqlite, hooks, retention: 86_400_000, log: silentLogger }).runDue();
  } finally {
    store.close();
  }
});
afterAll(async () => {
  await receiver.stop();
  dir.cleanup();
});

describe("webhook list", () => {
  test("shows each hook with its waiting events, since when it fails and its last error", async () => {
    const r = await outpost("webhook", "list");
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^NAME\s+URL\s+PENDING\s+EXPIRED\s+ORPHANED\s+FAILING SINCE\s+LAST ERROR$/);
    expect(lines[1]).toMatch(new RegExp(`^app\\s+${receiver.url}\\s+1\\s+0\\s+0\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z\\s+HTTP 500: failure \\d$`));
    expect(lines[2]).toMatch(/^down\s+http:\S+\s+2\s+0\s+0\s+\S+Z\s+.*(ECONNREFUSED|refused)/i);
  });

  test("--json gives the same per hook", async () => {
    const r = await outpost("webhook", "list", "--json");
    const hooks = JSON.parse(r.out) as Record<string, unknown>[];
    expect(hooks.map((h) => [h.name, h.configured, h.pending, h.delivered])).toEqual([["app", true, 1, 1], ["down", true, 2, 0]]);
    expect(hooks[0]).toMatchObject({ url: receiver.url, events: ["delivered", "queued"], user: "", last_error: expect.stringMatching(/^HTTP 500/) });
    expect(typeof hooks[1]!.failing_since).toBe("string");
  });
});

describe("webhook test", () => {
  test("NAME posts a signed sample event with the hook's secret and prints the receiver's answer", async () => {
    const before = receiver.received.length;
    const r = await outpost("webhook", "test", "app");
    expect(r.code).toBe(0);
    const got = receiver.received.slice(before);
    expect(got).toHaveLength(1);
    expect(got[0]!.signatureOk).toBe(true);
    expect(got[0]!.event).toMatchObject({ type: "delivered", message_id: "test", details: { test: true } });
    expect(Math.abs(got[0]!.timestamp - Date.now() / 1000)).toBeLessThan(60);
    expect(r.out).toContain(`POST ${receiver.url} (hook app), event ${got[0]!.eventId}`);
    expect(r.out).toContain("status: 200\nbody: ok\n");
  });

  test("a URL signs with --secret; without it, a URL not configured is a usage error", async () => {
    const other = startReceiver({ secret: "given", respond: () => 418 });
    try {
      const r = await outpost("webhook", "test", other.url, "--secret", "given");
      expect(r.code).toBe(1);
      expect(other.received[0]!.signatureOk).toBe(true);
      expect(r.out).toContain("status: 418\nbody: failure 0");
      const refused = await outpost("webhook", "test", other.url);
      expect(refused.code).toBe(2);
      expect(refused.err).toContain("give --secret S");
      expect(other.received).toHaveLength(1);
    } finally {
      await other.stop();
    }
  });

  test("a configured URL signs with its hook's secret; a receiver that cannot be reached exits 1", async () => {
    const before = receiver.received.length;
    expect((await outpost("webhook", "test", receiver.url)).code).toBe(0);
    expect(receiver.received[before]!.signatureOk).toBe(true);
    const down = await outpost("webhook", "test", "down");
    expect(down.code).toBe(1);
    expect(down.out).toMatch(/no answer: .*(ECONNREFUSED|refused)/i);
  });

  test("an unknown hook name exits 1 naming the hooks there are", async () => {
    const r = await outpost("webhook", "test", "nope");
    expect(r.code).toBe(1);
    expect(r.err).toContain("no [[webhook]] named nope");
    expect(r.err).toContain("(hooks: app, down)");
  });
});

describe("webhook retry", () => {
  test("makes the hook's failed events due now, and leaves other hooks alone", async () => {
    const before = outbox();
    expect(before.filter((r) => r.hook === "down").every((r) => r.next_attempt_at > Date.now())).toBe(true);
    const r = await outpost("webhook", "retry", "down");
    expect(r.code).toBe(0);
    expect(r.out).toBe("2 event(s) of hook down due now\n");
    const after = outbox();
    expect(after.filter((x) => x.hook === "down").every((x) => x.next_attempt_at <= Date.now())).toBe(true);
    expect(after.filter((x) => x.hook === "app")).toEqual(before.filter((x) => x.hook === "app"));
  });

  test("an unknown hook exits 1; a missing NAME is a usage error", async () => {
    expect((await outpost("webhook", "retry", "nope")).code).toBe(1);
    const r = await outpost("webhook", "retry");
    expect(r.code).toBe(2);
    expect(r.err).toContain("needs a hook's NAME");
  });
});
