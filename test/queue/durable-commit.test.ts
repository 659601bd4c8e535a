/**
 * Intake answers only after the WAL sync of its commit (db/durable.ts): a sync that has not returned means no
 * answer yet; a failing one means "not stored" — 451 4.3.0 over SMTP, 503 over HTTP — so the client keeps the mail.
 */
import { afterEach, expect, test } from "bun:test";
import { openStore, type Store } from "../../src/db/client.ts";
import { EventRecorder } from "../../src/events/record.ts";
import { Intake } from "../../src/intake/accept.ts";
import { IntakeError } from "../../src/intake/policy.ts";
import { Enqueuer } from "../../src/queue/enqueue.ts";
import { heldSync, OPTIONS_OFF, tempDir, testConfig, waitFor } from "../helpers/harness.ts";


let dir: ReturnType<typeof tempDir>;
let store: Store;
afterEach(() => {
  store.close();
  dir.cleanup();
});

function intakeWithHeldSync() {
  dir = tempDir();
  const config = testConfig(dir.path);
  const { sync, calls } = heldSync();
  store = openStore(config.database.path, { syncWal: sync });
  const intake = new Intake({
    store, enqueuer: new Enqueuer(store.sqlite, new EventRecorder(store.sqlite)), hostname: "outpost.test",
    limits: { maxMessageSize: 1 << 20, maxRecipients: 100, maxHops: 50 }, tracking: config.tracking, publicUrl: "",
  });
  const accept = () => intake.accept({
    userId: null, allowedDomains: null, envelopeFrom: "sender@example.org", recipients: ["a@dest.test"],
    raw: Buffer.from("From: sender@example.org\r\nTo: a@dest.test\r\nSubject: hi\r\n\r\nhello\r\n"), source: "smtp", options: OPTIONS_OFF,
  });
  return { calls, accept };
}

test("a message whose WAL sync has not returned gets no answer; once it returns, the message is accepted", async () => {
  const { calls, accept } = intakeWithHeldSync();
  let answer: string | undefined;
  const accepted = accept().then((m) => (answer = m.id));
  await waitFor(() => calls.length === 1, 2000, "the sync");
  await new Promise<void>((r) => setImmediate(r));
  expect(answer).toBeUndefined();
  calls[0]!.done();
  await accepted;
  expect(answer).toBeString();
});

test("a failing WAL sync answers 451 4.3.0 (HTTP 503): the message is reported not stored", async () => {
  const { calls, accept } = intakeWithHeldSync();
  const accepted = accept();
  await waitFor(() => calls.length === 1, 2000, "the sync");
  calls[0]!.fail(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
  const e = await accepted.then(() => null, (err: unknown) => err);
  expect(e).toBeInstanceOf(IntakeError);
  expect(`${e}`).toBe("451 4.3.0 temporary failure storing the message, try again");
  expect((e as IntakeError).httpStatus).toBe(503);
});
