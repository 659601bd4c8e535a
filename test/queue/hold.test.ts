/**
 * `outpost queue hold` / `release` against a running server: the CLI as its own process changes the database the
 * in-process runtime is delivering from, to a scripted receiver on 127.0.0.2, as an operator would on a live relay.
 */
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startFakeMx } from "../helpers/fake-mx.ts";
import { endAfterEach, runCli, startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

const own = endAfterEach();

const MIME = (subject: string) => Buffer.from(`From: app@example.com\r\nTo: someone@dest.test\r\nSubject: ${subject}\r\n\r\nHello\r\n`);

interface Row {
  status: string;
  attempts: number;
  next_attempt_at: number;
}

test("the running server never sends held mail, even long after it came due, and delivers it once released", async () => {
  const mx = own(await startFakeMx({ host: "127.0.0.2", rcptDefault: "451 4.7.1 try again later" }));
  const dir = own(tempDir());
  const toml = `[delivery]\nretry = ["1s"]\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.2"\nport = ${mx.port}\n`;
  const configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = ${JSON.stringify(dir.path)}\nhostname = "outpost.test"\n${toml}`);
  const rt = own((await startRuntime(testConfig(dir.path, toml))).rt);
  const outpost = (...args: string[]) => runCli(dir.path, [...args, "--config", configFile]);
  const row = (id: string) => rt.store.sqlite.query("SELECT status, attempts, next_attempt_at FROM recipients WHERE message_id = ?").get(id) as Row;
  const submit = (subject: string) =>
    rt.intake.accept({ userId: null, allowedDomains: null, envelopeFrom: "app@example.com", recipients: ["a@dest.test"], raw: MIME(subject), source: "api" });
  const delivered = (subject: string) => mx.messages.some((m) => m.raw.toString().includes(`Subject: ${subject}\r\n`));

  // deferred once (the receiver says 451), then held while its retry is a second away
  const held = await submit("held one");
  await waitFor(() => row(held.id).status === "deferred", 10_000, "the first attempt to be deferred");
  // its 1 s retry may be in flight when the CLI (a process of its own) gets there: hold leaves an attempt in
  // progress alone and says so, so the operator, like this test, holds again
  const hold = await waitFor(() => {
    const r = outpost("queue", "hold", held.id);
    return r.out === `${held.id}: 1 recipient of 1 message held\n` ? r : null;
  }, 15_000, "the hold to find the recipient between attempts");
  expect(hold.code).toBe(0);
  expect(row(held.id).status).toBe("held");

  // the receiver takes mail now; let the held recipient's retry time pass, then prove the scheduler ran after it:
  // a later message goes out, the held one does not
  mx.script.rcptDefault = undefined;
  const dueAt = row(held.id).next_attempt_at;
  await waitFor(() => Date.now() > dueAt + 1_000, 5_000, "the held recipient's retry time to pass");
  const other = await submit("other one");
  await waitFor(() => row(other.id).status === "delivered", 10_000, "the other message");
  expect(delivered("other one")).toBe(true);
  expect(delivered("held one")).toBe(false);
  expect(row(held.id)).toMatchObject({ status: "held", attempts: 1 });

  const release = outpost("queue", "release", held.id);
  expect(release.out).toBe(`${held.id}: 1 recipient of 1 message released for immediate delivery\n`);
  await waitFor(() => delivered("held one"), 10_000, "the released message");
  await waitFor(() => row(held.id).status === "delivered", 5_000, "the released recipient to settle");
  expect(row(held.id).attempts).toBe(2);
}, 60_000);
