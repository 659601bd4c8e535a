/**
 * One mailbox, one suppression: an address on the sender's list is answered `suppressed` and never delivered,
 * however the recipient is spelt (case, U-label or A-label domain, needless quotes), over SMTP (swaks) and the
 * API alike; another user's mail to it goes out.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { waitFor } from "../helpers/harness.ts";
import { startApi, type ApiFixture } from "../api/fixture.ts";
import { hasCommand, queueIdIn, run } from "./fixture.ts";

const SPELT = '"FOO"@XN--BCHER-KVA.EXAMPLE';

let f: ApiFixture;
let annKey: string;
let bobKey: string;

beforeAll(async () => {
  f = await startApi();
  annKey = await f.addUser("ann");
  bobKey = await f.addUser("bob");
  const add = await f.call("POST", "/v1/suppressions", { address: "foo@bücher.example" }, { key: annKey });
  expect(add.status).toBe(201);
  expect(await add.json()).toMatchObject({ address: "foo@xn--bcher-kva.example" });
});

afterAll(async () => {
  await f?.stop();
});

interface Recipient { address: string; status: string }

/** The message's recipients once delivery has settled every one that was queued (sandbox delivery). */
async function settled(id: string, key: string): Promise<Recipient[]> {
  return await waitFor(async () => {
    const m = (await (await f.call("GET", `/v1/messages/${id}`, undefined, { key })).json()) as { recipients: Recipient[] };
    return m.recipients.every((r) => r.status !== "queued") ? m.recipients : null;
  }, 5000, `message ${id} settled`);
}

async function sendApi(key: string): Promise<{ id: string; recipients: Recipient[] }> {
  const res = await f.call("POST", "/v1/send", { envelope: "app@example.com", recipient: [SPELT, "ok@example.org"], subject: "hi", text: "hi" }, { key });
  expect(res.status).toBe(202);
  return (await res.json()) as { id: string; recipients: Recipient[] };
}

async function sendSmtp(user: string): Promise<string> {
  const port = f.rt.smtp!.addresses()[0]!.port;
  const r = await run(["swaks", "--server", `127.0.0.1:${port}`, "--tls", "--auth", "PLAIN", "--auth-user", user, "--auth-password", `pw-${user}`,
    "--from", "app@example.com", "--to", `${SPELT},ok@example.org`, "--header", "Subject: hi", "--body", "hi"]);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain(`RCPT TO:<${SPELT}>`);
  return queueIdIn(r.stdout);
}

test("over the API, the sender's own suppression stops another spelling of the address; another user's mail goes out", async () => {
  const ann = await sendApi(annKey);
  expect(ann.recipients.map((r) => [r.address, r.status])).toEqual([["FOO@xn--bcher-kva.example", "suppressed"], ["ok@example.org", "queued"]]);
  expect((await settled(ann.id, annKey)).map((r) => r.status)).toEqual(["suppressed", "delivered"]);
  const bob = await sendApi(bobKey);
  expect(bob.recipients.map((r) => r.status)).toEqual(["queued", "queued"]);
  expect((await settled(bob.id, bobKey)).map((r) => r.status)).toEqual(["delivered", "delivered"]);
});

test.skipIf(!hasCommand("swaks"))("over SMTP, the same: suppressed for the user whose list has it, delivered for another", async () => {
  const ann = await settled(await sendSmtp("ann"), annKey);
  expect(ann.map((r) => [r.address, r.status])).toEqual([["FOO@xn--bcher-kva.example", "suppressed"], ["ok@example.org", "delivered"]]);
  const bob = await settled(await sendSmtp("bob"), bobKey);
  expect(bob.map((r) => r.status)).toEqual(["delivered", "delivered"]);
});
