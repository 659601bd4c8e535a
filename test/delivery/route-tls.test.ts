/**
 * A smart host route with credentials, end to end in process: by default the receiver's certificate must verify
 * (a man in the middle with a certificate of its own must not collect the password), with the route's `tls_ca`
 * for a private CA; a route that turns verification off by hand is warned about at start.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { selfSignedCertificate } from "../../src/smtp/self-signed.ts";
import { startFakeMx, type FakeMx, type FakeMxScript } from "../helpers/fake-mx.ts";
import { startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";
import { makeTestCa, testCaAvailable, type TestCa } from "../helpers/test-ca.ts";

const HOST = "127.0.0.7";
const AUTH = { user: "relay", pass: "s3cret" };

let rt: Runtime | null = null;
let mx: FakeMx | null = null;
let dir: ReturnType<typeof tempDir> | null = null;
let caDir: ReturnType<typeof tempDir>;
let ca: TestCa;

beforeAll(() => {
  caDir = tempDir("outpost-ca-");
  if (testCaAvailable) ca = makeTestCa(caDir.path);
});
afterAll(() => caDir.cleanup());
afterEach(async () => {
  await rt?.stop();
  await mx?.stop();
  dir?.cleanup();
  rt = mx = dir = null;
});

/** A receiver on HOST that wants AUTH, and a runtime routing everything to it with `route` (extra TOML). */
async function setup(script: FakeMxScript, route: string) {
  mx = await startFakeMx({ host: HOST, starttls: true, auth: AUTH, ...script });
  dir = tempDir();
  const logged: Record<string, unknown>[] = [];
  const config = testConfig(
    dir.path,
    `[http]\nlisten = "127.0.0.1:0"\n[[delivery.route]]\ndomain = "*"\nhost = "${HOST}"\nport = ${mx.port}\n` +
      `username = "${AUTH.user}"\npassword = "${AUTH.pass}"\n${route}`,
  );
  rt = (await startRuntime(config, createLogger("info", (l) => logged.push(JSON.parse(l) as Record<string, unknown>)))).rt;
  const accepted = await rt.intake.accept({
    userId: null, allowedDomains: null, envelopeFrom: "app@example.com", recipients: ["someone@dest.test"],
    raw: Buffer.from("From: app@example.com\r\nTo: someone@dest.test\r\nSubject: hi\r\n\r\nhello\r\n"), source: "api",
  });
  return { rt, mx, logged, id: accepted.id };
}

function recipient(r: Runtime) {
  return r.store.sqlite.query("SELECT status, attempts, last_reply FROM recipients").get() as { status: string; attempts: number; last_reply: string | null };
}

describe.skipIf(!testCaAvailable)("a route with credentials", () => {
  test("verifies by default: a receiver with a certificate nobody vouches for gets no AUTH and no mail, the mail waits", async () => {
    const { rt, mx } = await setup({ certificate: selfSignedCertificate(HOST) }, "");
    await waitFor(() => recipient(rt).status === "deferred", 10_000, "the deferral");
    expect(recipient(rt)).toMatchObject({ status: "deferred", attempts: 1 });
    expect(recipient(rt).last_reply).toContain("TLS required but the server's certificate did not verify");
    expect(mx.authSeen).toEqual([]);
    expect(mx.transactions).toEqual([]);
  });

  test("with tls_ca naming the CA that signed the receiver's certificate, logs in and delivers", async () => {
    const { rt, mx, logged } = await setup({ certificate: ca.issue("smarthost.test", [HOST]) }, `tls_ca = ${JSON.stringify(ca.caFile)}\n`);
    await waitFor(() => recipient(rt).status === "delivered", 10_000, "the delivery");
    expect(mx.logins).toEqual(["relay"]);
    expect(mx.messages.map((m) => m.secure)).toEqual([true]);
    expect(logged.some((l) => l.event === "route_credentials_unverified")).toBe(false);
  });

  test("verification turned off by hand: sends unverified, and a route off this machine is warned about at start", async () => {
    // the receiver's route (loopback: nobody in the middle) and one to a smart host elsewhere, never used here
    const elsewhere = `[[delivery.route]]\ndomain = "far.test"\nhost = "smarthost.example.net"\nport = 587\ntls = "required"\n` +
      `username = "u"\npassword = "p"\n`;
    const { rt, mx, logged } = await setup({ certificate: selfSignedCertificate(HOST) }, `tls = "opportunistic"\n${elsewhere}`);
    await waitFor(() => recipient(rt).status === "delivered", 10_000, "the delivery");
    expect(mx.logins).toEqual(["relay"]);
    const warnings = logged.filter((l) => l.event === "route_credentials_unverified");
    expect(warnings).toMatchObject([{ level: "warn", domain: "far.test", host: "smarthost.example.net", port: 587, tls: "required" }]);
    expect(String(warnings[0]!.detail)).toContain("a man in the middle can collect it");
  });
});
