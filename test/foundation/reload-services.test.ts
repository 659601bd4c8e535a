/**
 * A reload in process (what SIGHUP calls: Runtime.reload): each reloadable part of the config reaches the service
 * that uses it — trusted networks at RCPT, `[tracking]` defaults at intake, the webhook list at the event outbox,
 * `http.rate` at the API guard — and keys that need a restart keep their running value.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import type { Config } from "../../src/config/schema.ts";
import { createLogger } from "../../src/observe/log.ts";
import { RELOADABLE } from "../../src/runtime/reload.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { secretFrom, startRuntime, tempDir, testConfig } from "../helpers/harness.ts";
import { RawSmtp } from "../smtp/fixture.ts";

let rt: Runtime | null = null;
let dir: ReturnType<typeof tempDir> | null = null;
const logs: Array<Record<string, unknown>> = [];

afterEach(async () => {
  await rt?.stop();
  dir?.cleanup();
  rt = dir = null;
  logs.length = 0;
});

/** A config: delivery in sandbox, HTTP on port 0 with `http` lines, then `toml`. */
function configText(toml: string, http = ""): string {
  return `[http]\nlisten = "127.0.0.1:0"\n${http}\n[delivery]\nsandbox = true\n${toml}`;
}

async function startWith(toml: string): Promise<{ rt: Runtime; apiKey: string; config: (toml: string, http?: string) => Config }> {
  dir = tempDir();
  const path = dir.path;
  const log = createLogger("info", (line) => logs.push(JSON.parse(line) as Record<string, unknown>));
  const started = await startRuntime(testConfig(path, configText(toml)), log);
  rt = started.rt;
  return { rt: started.rt, apiKey: secretFrom(started.firstRun, "api key"), config: (t, http) => testConfig(path, configText(t, http)) };
}

/** A message from a trusted-network client (no user), taking the defaults. */
function submit(o: { rt: Runtime }) {
  return o.rt.intake.accept({
    envelopeFrom: "app@example.org", recipients: ["someone@dest.test"], raw: Buffer.from("Subject: x\r\n\r\nbody\r\n"),
    source: "smtp", userId: null, allowedDomains: null,
  });
}

/** RCPT from 127.0.0.1 without AUTH: the reply (250 when trusted, 554 5.7.1 when not). */
async function rcptReply(port: number): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    for (const line of ["EHLO client.test", "MAIL FROM:<app@example.org>"]) {
      c.write(`${line}\r\n`);
      await c.reply();
    }
    c.write("RCPT TO:<someone@dest.test>\r\n");
    return await c.reply();
  } finally {
    c.close();
  }
}

test("trusted networks taken out by a reload stop relaying without AUTH on the next transaction", async () => {
  const o = await startWith(`[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n`);
  const port = o.rt.smtp!.addresses()[0]!.port;
  expect(await rcptReply(port)).toStartWith("250");
  o.rt.reload(() => o.config(`[smtp]\ntrusted_networks = ["10.0.0.0/8"]\n`));
  expect(await rcptReply(port)).toStartWith("554 5.7.1");
  expect(logs.find((l) => l.event === "config_reloaded")).toMatchObject({ changed: ["smtp.trusted_networks"] });
});

test("tracking defaults and webhooks from a reload apply to the next message, and its queued event goes to the new webhook", async () => {
  const o = await startWith(`[[webhook]]\nurl = "http://127.0.0.1:9/old-hook"\nsecret = "s"\n`);
  o.rt.reload(() => o.config(`[tracking]\nopens = true\n[[webhook]]\nurl = "http://127.0.0.1:9/new-hook"\nsecret = "s"\n`));
  const queued = await submit(o);
  const sqlite = o.rt.store.sqlite;
  expect(sqlite.query<{ track_opens: number }, [string]>("SELECT track_opens FROM messages WHERE id = ?").get(queued.id)).toEqual({ track_opens: 1 });
  expect(sqlite.query<{ url: string }, []>("SELECT DISTINCT url FROM webhook_outbox").all()).toEqual([{ url: "http://127.0.0.1:9/new-hook" }]);
  expect(logs.find((l) => l.event === "config_reloaded")).toMatchObject({ changed: ["tracking.opens", "webhook"] });
});

test("an API rate set by a reload limits the next requests", async () => {
  const o = await startWith("");
  const get = () => fetch(`http://127.0.0.1:${o.rt.http!.port}/v1/events`, { headers: { authorization: `Bearer ${o.apiKey}` } });
  for (let i = 0; i < 3; i++) expect((await get()).status).toBe(200);
  o.rt.reload(() => o.config("", `rate = "2/min"`));
  expect([(await get()).status, (await get()).status, (await get()).status]).toEqual([200, 200, 429]);
});

test("bounce tracking switched on together with a new bounce domain waits for the restart the domain needs", async () => {
  const o = await startWith("");
  o.rt.reload(() => o.config(`[tracking]\nbounce_domain = "bounces.example.org"\nbounces = true\nclicks = true\n`));
  expect(o.rt.config.tracking).toMatchObject({ bounce_domain: "", bounces: false, clicks: true });
  expect(logs.find((l) => l.event === "config_reloaded")).toMatchObject({ changed: ["tracking.clicks"] });
  expect(logs.find((l) => l.event === "config_needs_restart")).toMatchObject({ keys: ["tracking.bounce_domain", "tracking.bounces"] });
  // with the running config, a message that takes the defaults is still accepted
  const queued = await submit(o);
  expect(queued.id).toBeString();
  expect(o.rt.store.sqlite.query<{ track_bounces: number }, []>("SELECT track_bounces FROM messages").get()).toEqual({ track_bounces: 0 });
});

test("docs/config.md names every key a reload applies, in its table of what a reload applies", async () => {
  const doc = await Bun.file(join(import.meta.dir, "../../docs/config.md")).text();
  const section = doc.slice(doc.indexOf("## Reloading without a restart"));
  const table = section.slice(0, section.indexOf("Every other key needs a restart"));
  const named = new Set([...table.matchAll(/`([a-z_]+(?:\.[a-z_]+)?)`/g)].map((m) => m[1]!));
  expect([...RELOADABLE].filter((k) => !named.has(k))).toEqual([]);
  expect([...named].filter((k) => k.includes(".") && !RELOADABLE.has(k))).toEqual([]);
});
