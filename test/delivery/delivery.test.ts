/**
 * Delivery end to end, in process: mail accepted through the intake door travels the real loop, router and SMTP
 * transport to a scripted receiver on 127.0.0.2 (static route), and the rows and events tell the same story.
 */
import { describe, expect, test } from "bun:test";
import type { Runtime } from "../../src/runtime/start.ts";
import { startFakeMx, type FakeMx, type FakeMxScript } from "../helpers/fake-mx.ts";
import { endAfterEach, startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

const own = endAfterEach();

async function setup(script: FakeMxScript, delivery = ""): Promise<{ rt: Runtime; mx: FakeMx }> {
  const mx = own(await startFakeMx({ host: "127.0.0.2", ...script }));
  const dir = own(tempDir());
  const config = testConfig(
    dir.path,
    `[http]\nlisten = "127.0.0.1:0"\n[delivery]\n${delivery}\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n`,
  );
  const rt = own((await startRuntime(config)).rt);
  return { rt, mx };
}

const MIME = (subject: string) =>
  Buffer.from(`From: app@example.com\r\nTo: someone@dest.test\r\nSubject: ${subject}\r\n\r\nHello\r\n.leading dot\r\nbye\r\n`);

function submit(r: Runtime, recipients: string[], subject = "hello") {
  return r.intake.accept({
    userId: null, allowedDomains: null, envelopeFrom: "app@example.com", recipients, raw: MIME(subject), source: "api",
  });
}

function rows(r: Runtime, messageId?: string) {
  const q = messageId
    ? r.store.sqlite.query("SELECT address, status, attempts, last_reply, last_mx, lease_until FROM recipients WHERE message_id = ? ORDER BY address").all(messageId)
    : r.store.sqlite.query("SELECT address, status, attempts, last_reply, last_mx, lease_until FROM recipients ORDER BY address").all();
  return q as { address: string; status: string; attempts: number; last_reply: string; last_mx: string; lease_until: number | null }[];
}

function pending(r: Runtime): number {
  return (r.store.sqlite.query("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get() as { n: number }).n;
}

function eventTypes(r: Runtime, messageId: string, address: string): string[] {
  return (r.store.sqlite.query("SELECT type FROM events WHERE message_id = ? AND recipient = ? ORDER BY id").all(messageId, address) as { type: string }[])
    .map((e) => e.type);
}

describe("delivery end to end", () => {
  test("delivers an accepted message to the receiver with its bytes intact and records delivered", async () => {
    const { rt, mx } = await setup({});
    const res = await submit(rt, ["a@dest.test", "b@other.test"]);
    await waitFor(() => pending(rt) === 0, 10_000, "delivery");
    // two domains, one destination (the static route): one transaction
    expect(mx.messages.length).toBe(1);
    const m = mx.messages[0]!;
    expect(m.from).toBe("app@example.com");
    expect([...m.to].sort()).toEqual(["a@dest.test", "b@other.test"]);
    expect(m.helo).toBe("outpost.test");
    const raw = m.raw.toString();
    expect(raw).toContain("Subject: hello\r\n");
    expect(raw).toContain("\r\n.leading dot\r\n"); // dot-stuffed on the wire, restored by the receiver
    expect(raw).toMatch(/^Message-ID: <.+>\r$/m);
    for (const row of rows(rt, res.id)) {
      expect(row.status).toBe("delivered");
      expect(row.attempts).toBe(1);
      expect(row.last_reply).toMatch(/^250 /);
      expect(row.lease_until).toBeNull();
    }
    expect(eventTypes(rt, res.id, "a@dest.test")).toEqual(["queued", "delivered"]);
  });

  test("a slow receiver never sees more connections than per_destination_connections", async () => {
    const { rt, mx } = await setup({ delayMs: 60 }, "per_destination_connections = 3\n");
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => submit(rt, [`r${i}@dest.test`])));
    await waitFor(() => pending(rt) === 0, 30_000, "delivery");
    expect(mx.messages.length).toBe(30);
    expect(mx.maxOpen).toBeLessThanOrEqual(3);
    expect(mx.maxOpen).toBeGreaterThan(1); // it did use parallel connections
    expect(ids.length).toBe(30);
  }, 40_000);

  test("a 421 storm lowers the destination's concurrency, and it recovers once the storm is over", async () => {
    const { rt, mx } = await setup({ delayMs: 20, data: "421 4.7.0 too many messages, slow down" },
      `per_destination_connections = 4\nretry = ["1s"]\n`);
    for (let i = 0; i < 12; i++) await submit(rt, [`s${i}@dest.test`]);
    const snap = () => rt.delivery!.loop.throttle.snapshot().destinations[0];
    await waitFor(() => (snap()?.limit ?? 4) <= 2, 10_000, "the window to be cut");
    await waitFor(() => rows(rt).some((r) => r.status === "deferred" && r.last_reply.startsWith("421")), 5_000, "a 421 deferral");
    mx.script.data = undefined; // storm over
    await waitFor(() => pending(rt) === 0, 30_000, "the deferred mail to go out");
    for (let i = 0; i < 30; i++) await submit(rt, [`t${i}@dest.test`]);
    await waitFor(() => pending(rt) === 0, 30_000, "more mail");
    const after = snap();
    // back to the configured window (an idle destination at its full budget is forgotten) or growing again
    expect(after === undefined || after.limit >= 3).toBe(true);
    expect(mx.messages.length).toBe(42);
  }, 60_000);

  test("a deferred recipient is retried on the schedule and then delivered", async () => {
    const { rt, mx } = await setup({ rcpt: { "late@dest.test": "451 4.3.0 local error in processing" } }, `retry = ["1s"]\n`);
    const res = await submit(rt, ["late@dest.test", "now@dest.test"]);
    await waitFor(() => rows(rt, res.id).find((r) => r.address === "late@dest.test")?.status === "deferred", 10_000, "deferral");
    expect(rows(rt, res.id).find((r) => r.address === "now@dest.test")?.status).toBe("delivered");
    mx.script.rcpt = {};
    await waitFor(() => pending(rt) === 0, 10_000, "retry");
    const late = rows(rt, res.id).find((r) => r.address === "late@dest.test")!;
    expect(late.status).toBe("delivered");
    expect(late.attempts).toBe(2);
    expect(eventTypes(rt, res.id, "late@dest.test")).toEqual(["queued", "deferred", "delivered"]);
    expect(mx.messages.map((m) => m.to)).toEqual([["now@dest.test"], ["late@dest.test"]]);
  });

  test("a 5xx reply bounces the recipient at the first attempt", async () => {
    const { rt } = await setup({ rcpt: { "gone@dest.test": "550 5.1.1 no such user" } });
    const res = await submit(rt, ["gone@dest.test"]);
    await waitFor(() => pending(rt) === 0, 10_000, "bounce");
    expect(rows(rt, res.id)[0]).toMatchObject({ status: "bounced", attempts: 1 });
    expect(rows(rt, res.id)[0]!.last_reply).toContain("5.1.1");
  });

  test("sandbox mode records delivered with reply sandbox and sends nothing", async () => {
    const { rt, mx } = await setup({}, "sandbox = true\n");
    const res = await submit(rt, ["a@dest.test"]);
    await waitFor(() => pending(rt) === 0, 10_000, "sandbox delivery");
    expect(rows(rt, res.id)[0]).toMatchObject({ status: "delivered" });
    expect(rows(rt, res.id)[0]!.last_reply).toContain("sandbox");
    expect(mx.connections).toBe(0);
  });

  test("stopping the runtime leaves no recipient leased", async () => {
    const { rt, mx } = await setup({ delayMs: 200 }, "per_destination_connections = 1\n");
    for (let i = 0; i < 10; i++) await submit(rt, [`x${i}@dest.test`]);
    await waitFor(() => mx.rcptSeen.length >= 1, 10_000, "first attempt");
    await rt.stop();
    const r = rt;
    // reopen read-only: rt.stop() closed the store
    const { Database } = await import("bun:sqlite");
    const db = new Database(r.config.database.path, { readonly: true });
    const leased = db.query("SELECT count(*) AS n FROM recipients WHERE lease_until IS NOT NULL").get() as { n: number };
    db.close();
    expect(leased.n).toBe(0);
    expect(mx.messages.length).toBeGreaterThanOrEqual(1);
    rt.stop = async () => {}; // already stopped
  }, 30_000);
});
