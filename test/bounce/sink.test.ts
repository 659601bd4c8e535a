/**
 * The bounce domain is a sink, never a relay: what strangers send there is consumed (kept, or dropped), nothing is
 * queued for delivery and nothing answers them; what is kept is listed and shown by `outpost bounce`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { runCli, waitFor } from "../helpers/harness.ts";
import { BOUNCE_DOMAIN, localOf, sendOverSmtp, startBounceFixture, waitDelivered, type BounceFixture } from "./fixture.ts";

let f: BounceFixture;
/** a genuine return path, from a tracked message delivered at the start */
let returnPath: string;

beforeAll(async () => {
  f = await startBounceFixture();
  const res = await f.send({ envelope: "app@example.com", from: "app@example.com", to: ["reader@dest.test"], subject: "s", text: "t", bouncetracking: true });
  expect(res.status).toBe(202);
  await waitDelivered(f);
  returnPath = f.mx.messages.find((m) => m.to.includes("reader@dest.test"))!.from;
});
afterAll(async () => {
  await f?.stop();
});

const messageCount = () => f.rt.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM messages").get()!.n;

interface ListedJson {
  id: string;
  kind: string;
  rcpt: string;
  mail_from: string;
  client_ip: string;
  reason: string;
  size: number;
}

function listed(): ListedJson[] {
  const r = runCli(f.dir, ["bounce", "list", "--json", "--config", f.configFile]);
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as ListedJson[];
}

describe("mail from strangers", () => {
  test("to postmaster@ with a dead sender domain: no outbound mail at all, kept and listed by `outpost bounce list`", async () => {
    const before = messageCount();
    const r = await sendOverSmtp(f.smtpPort, "nobody@dead.invalid", [`postmaster@${BOUNCE_DOMAIN}`],
      "From: nobody@dead.invalid\r\nSubject: your server\r\n\r\nplease read\r\n", "127.0.0.4");
    expect(r.data).toMatch(/^250 2\.0\.0 Ok: received as (i[0-9a-z]+)$/);
    const id = r.data!.split(" ").at(-1)!;
    // committed before the 250: had anything been queued, it would be in the table now
    expect(messageCount()).toBe(before);
    // the delivery loop has run since (this message went through it), and the MX saw nothing else
    const sentBefore = f.mx.transactions.length;
    expect((await f.send({ envelope: "app@example.com", to: ["after@dest.test"], subject: "after", text: "t" })).status).toBe(202);
    await waitDelivered(f);
    expect(f.mx.transactions.slice(sentBefore).map((t) => t.to)).toEqual([["after@dest.test"]]);
    expect(f.mx.transactions.some((t) => t.from === "" || t.to.some((a) => a.endsWith("dead.invalid")))).toBe(false);

    expect(listed()).toContainEqual(expect.objectContaining({
      id, kind: "postmaster", rcpt: `postmaster@${BOUNCE_DOMAIN}`, mail_from: "nobody@dead.invalid", client_ip: "127.0.0.4",
    }));
    const text = runCli(f.dir, ["bounce", "list", "--config", f.configFile]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^ID +RECEIVED +KIND +FROM +RCPT +CLIENT +SIZE +REASON$/m);
    expect(text.out).toMatch(new RegExp(`^${id} +\\S+ +postmaster +nobody@dead\\.invalid +postmaster@${BOUNCE_DOMAIN.replace(/\./g, "\\.")} +127\\.0\\.0\\.4 `, "m"));
  });

  test("a report to a valid token that cannot be read is kept, and `outpost bounce show` prints it as received", async () => {
    const raw = "From: MAILER-DAEMON@mx.odd.test\r\nSubject: Mail delivery failed\r\n\r\nsomething happened, no address here\r\n\xe9t\xe9\r\n";
    const r = await sendOverSmtp(f.smtpPort, "", [returnPath], raw);
    expect(r.data).toMatch(/^250 /);
    const id = r.data!.split(" ").at(-1)!;
    const entry = listed().find((m) => m.id === id)!;
    expect(entry).toMatchObject({ kind: "unparsed", mail_from: "", rcpt: returnPath });
    const shown = Bun.spawnSync(["bun", "src/main.ts", "bounce", "show", id, "--config", f.configFile], { cwd: `${import.meta.dir}/../..` });
    expect(shown.exitCode).toBe(0);
    expect(Buffer.from(shown.stdout).equals(Buffer.from(raw, "latin1"))).toBe(true);
    const json = JSON.parse(runCli(f.dir, ["bounce", "show", id, "--json", "--config", f.configFile]).out) as { raw_base64: string; reason: string };
    expect(Buffer.from(json.raw_base64, "base64").equals(Buffer.from(raw, "latin1"))).toBe(true);
    expect(json.reason).toMatch(/no delivery report/);
  });

  test("20 messages of random bytes to a valid token are each answered 250 or 5xx, and outpost keeps working", async () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 20; i++) {
      const bytes = Array.from({ length: 1 + Math.floor(random() * 20_000) }, () => Math.floor(random() * 256));
      const r = await sendOverSmtp(f.smtpPort, i % 2 ? "" : "x@random.test", [returnPath], Buffer.from(bytes).toString("latin1"), "127.0.0.5");
      expect(r.data ?? "no data").toMatch(/^(250|5\d\d) /);
    }
    const res = await f.send({ envelope: "app@example.com", to: ["still@dest.test"], subject: "still", text: "t" });
    expect(res.status).toBe(202);
    await waitDelivered(f);
  });
});

describe("`outpost bounce` usage", () => {
  test("an unknown id exits 1; a missing id or an unknown subcommand exits 2 with the usage", () => {
    const unknown = runCli(f.dir, ["bounce", "show", "inope", "--config", f.configFile]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain("no kept message inope");
    const missing = runCli(f.dir, ["bounce", "show", "--config", f.configFile]);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("bounce show needs an id");
    const bad = runCli(f.dir, ["bounce", "frob", "--config", f.configFile]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("outpost bounce list");
    expect(runCli(f.dir, ["bounce", "list", "extra", "--config", f.configFile]).code).toBe(2);
  });
});

describe("postmaster forwarding", () => {
  test("with tracking.postmaster_forward, mail to abuse@ is kept and forwarded from <> to the operator", async () => {
    const g = await startBounceFixture(`postmaster_forward = "ops@ops.test"`);
    try {
      const r = await sendOverSmtp(g.smtpPort, "reporter@remote.test", [`abuse@${BOUNCE_DOMAIN}`], "Subject: spam from you\r\n\r\nsee attached\r\n");
      expect(r.data).toMatch(/^250 /);
      const copy = await waitFor(() => g.mx.messages.find((m) => m.to.includes("ops@ops.test")), 10_000, "the forwarded copy");
      expect(copy.from).toBe("");
      expect(copy.raw.toString()).toContain("Subject: spam from you");
      expect(copy.raw.toString()).toMatch(/^Received: from mx\.remote\.test /);
      const kept = JSON.parse(runCli(g.dir, ["bounce", "list", "--json", "--config", g.configFile]).out) as ListedJson[];
      expect(kept.map((k) => k.kind)).toEqual(["abuse"]);
    } finally {
      await g.stop();
    }
  });
});

test("a token's return path is a single local part under 64 octets", () => {
  expect(Buffer.byteLength(localOf(returnPath))).toBeLessThanOrEqual(64);
});
