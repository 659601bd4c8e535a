/** bounce/ingest against a real store: what is recorded, what is kept, and what happens when the store fails. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { startRuntime, tempDir, testConfig } from "../../test/helpers/harness.ts";
import { SmtpError } from "../mail/errors.ts";
import type { RecipientId } from "../mail/ids.ts";
import type { Runtime } from "../runtime/start.ts";
import { InboundStore } from "./inbound.ts";

let dir: ReturnType<typeof tempDir>;
let rt: Runtime;

beforeEach(async () => {
  dir = tempDir();
  rt = (await startRuntime(testConfig(dir.path, `[smtp]\nlisten = []\n[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\n[tracking]\nbounce_domain = "b.test"\n`))).rt;
  // rows stay as intake left them (queued): a late bounce must also end a recipient still waiting
  for (const s of rt.services.filter((s) => s.name === "delivery")) await s.stop();
});
afterEach(async () => {
  await rt.stop();
  dir.cleanup();
});

async function queuedRecipient(): Promise<{ id: RecipientId; returnPath: string }> {
  const m = await rt.intake.accept({
    userId: null, allowedDomains: null, envelopeFrom: "app@example.com", recipients: ["gone@dest.test"],
    raw: Buffer.from("Subject: hi\r\n\r\nhi\r\n"), source: "api", options: { trackBounces: true },
  });
  const id = m.recipients[0]!.id;
  return { id, returnPath: rt.verp.verpAddress(id, "b.test") };
}

const DSN = [
  "From: MAILER-DAEMON@mx.dest.test",
  "Subject: Undelivered Mail Returned to Sender",
  'Content-Type: multipart/report; report-type=delivery-status; boundary="B"',
  "",
  "--B",
  "Content-Type: message/delivery-status",
  "",
  "Reporting-MTA: dns; mx.dest.test",
  "",
  "Final-Recipient: rfc822; gone@dest.test",
  "Action: failed",
  "Status: 5.1.1",
  "Diagnostic-Code: smtp; 550 5.1.1 no such user",
  "",
  "--B--",
  "",
].join("\r\n");

const receive = (returnPath: string, raw = DSN) =>
  rt.bounces.receive({ recipients: [returnPath], mailFrom: "", clientIp: "192.0.2.7", raw: Buffer.from(raw) });

const status = (id: string) => rt.store.sqlite.query<{ status: string }, [string]>("SELECT status FROM recipients WHERE id = ?").get(id)!.status;

describe("bounce ingest", () => {
  test("a bounce for a recipient still in the queue ends it: bounced, no further attempt", async () => {
    const { id, returnPath } = await queuedRecipient();
    expect((await receive(returnPath)).outcome).toBe("bounced");
    expect(status(id)).toBe("bounced");
  });

  test("a report for a recipient that is no longer in the queue is kept as unmatched", async () => {
    const { id, returnPath } = await queuedRecipient();
    rt.store.sqlite.run("DELETE FROM recipients WHERE id = ?", [id]);
    const got = await receive(returnPath);
    const kept = new InboundStore(rt.store.sqlite).get(got.id)!;
    expect(kept.kind).toBe("unmatched");
    expect(kept.reason).toContain(id);
  });

  test("a failure while recording is logged and the mail kept as it came; the sender is still answered 250", async () => {
    const { returnPath } = await queuedRecipient();
    rt.store.sqlite.run("DROP TABLE events"); // the bounce's event cannot be written
    const got = await receive(returnPath);
    const kept = new InboundStore(rt.store.sqlite).get(got.id)!;
    expect(kept.kind).toBe("failed");
    expect(kept.raw.toString()).toBe(DSN);
  });

  test("when even keeping it fails, the answer is 451 4.3.0: the sender keeps the report and tries again", async () => {
    const { returnPath } = await queuedRecipient();
    rt.store.sqlite.run("DROP TABLE events");
    rt.store.sqlite.run("DROP TABLE inbound_mail");
    const e = await receive(returnPath).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SmtpError);
    expect(String(e)).toStartWith("451 4.3.0");
  });
});
