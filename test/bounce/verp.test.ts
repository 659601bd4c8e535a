/**
 * Bounce tracking end to end: a message with bouncetracking leaves with a VERP return path per recipient, a
 * report to that return path arrives over SMTP without AUTH, and the recipient, its events, the owner's
 * suppression list and later sends all show it. Forged tokens are refused at RCPT.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { secretFrom, startRuntime, tempDir, testConfig } from "../helpers/harness.ts";
import { arfFor, BOUNCE_DOMAIN, dsnFor, localOf, sendOverSmtp, startBounceFixture, waitDelivered, type BounceFixture } from "./fixture.ts";

const CORPUS = join(import.meta.dir, "../fixtures/bounces");

let f: BounceFixture;
beforeAll(async () => {
  f = await startBounceFixture();
});
afterAll(async () => {
  await f?.stop();
});

interface Event {
  type: string;
  recipient: string;
  details: Record<string, unknown>;
}

async function tracked(to: string[], subject = "hello") {
  const res = await f.send({ envelope: "app@example.com", from: "app@example.com", to, subject, text: "hi", bouncetracking: true });
  expect(res.status).toBe(202);
  await waitDelivered(f);
  return res.body;
}

/** The MAIL FROM the fake MX saw for each recipient. */
function returnPathsOf(addresses: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of f.mx.messages) for (const to of m.to) if (addresses.includes(to)) out.set(to, m.from);
  return out;
}

const rowOf = (id: string) =>
  f.rt.store.sqlite.query<{ status: string; last_status: string }, [string]>("SELECT status, last_status FROM recipients WHERE id = ?").get(id)!;

async function eventsOf(messageId: string): Promise<Event[]> {
  const m = (await f.get(`/v1/messages/${messageId}`)) as { recipients: { address: string; status: string; events: Event[] }[] };
  return m.recipients.flatMap((r) => r.events.map((e) => ({ ...e, recipient: r.address })));
}

async function suppressed(): Promise<{ address: string; reason: string }[]> {
  return ((await f.get("/v1/suppressions")) as { suppressions: { address: string; reason: string }[] }).suppressions;
}

describe("VERP on the way out", () => {
  test("each recipient of a tracked message gets its own transaction and a b+token return path naming its row", async () => {
    const sent = await tracked(["one@dest.test", "two@dest.test"]);
    const paths = returnPathsOf(["one@dest.test", "two@dest.test"]);
    expect(paths.size).toBe(2);
    for (const r of sent.recipients) {
      const path = paths.get(r.address)!;
      expect(path).toMatch(new RegExp(`^b\\+[0-9a-z]{36}@${BOUNCE_DOMAIN.replace(/\./g, "\\.")}$`));
      expect(f.rt.verp.recipientFromVerp(localOf(path))).toBe(r.id as never);
    }
    const transactions = f.mx.messages.filter((m) => m.to.some((t) => paths.has(t)));
    expect(transactions.map((m) => m.to.length)).toEqual([1, 1]);
  });

  test("an untracked message keeps its sender's return path and one transaction for its recipients", async () => {
    const res = await f.send({ envelope: "app@example.com", from: "app@example.com", to: ["three@dest.test", "four@dest.test"], subject: "plain", text: "hi" });
    expect(res.status).toBe(202);
    await waitDelivered(f);
    const m = f.mx.messages.find((x) => x.to.includes("three@dest.test"))!;
    expect(m.from).toBe("app@example.com");
    expect([...m.to].sort()).toEqual(["four@dest.test", "three@dest.test"]);
  });
});

describe("a report to the return path", () => {
  test("an RFC 3464 DSN over SMTP without AUTH bounces the delivered recipient, suppresses it for its owner, and a later send to it is suppressed", async () => {
    const sent = await tracked(["gone@dest.test", "stays@dest.test"]);
    const gone = sent.recipients.find((r) => r.address === "gone@dest.test")!;
    expect(rowOf(gone.id).status).toBe("delivered");
    const path = returnPathsOf(["gone@dest.test"]).get("gone@dest.test")!;

    const r = await sendOverSmtp(f.smtpPort, "", [path], dsnFor("gone@dest.test", path));
    expect(r.rcpt).toEqual([expect.stringMatching(/^250 /)]);
    expect(r.data).toMatch(/^250 2\.0\.0 Ok: received as i[0-9a-z]+$/);

    expect(rowOf(gone.id)).toEqual({ status: "bounced", last_status: "5.1.1" });
    const bounced = (await eventsOf(sent.id)).filter((e) => e.type === "bounced");
    expect(bounced).toEqual([expect.objectContaining({
      recipient: "gone@dest.test",
      details: expect.objectContaining({
        status: "5.1.1", bounce_class: "hard", matched_by: "verp", async: true, mx: "mailstore.dest.test",
        reply: expect.stringContaining("User unknown"),
      }),
    })]);
    expect(rowOf(sent.recipients.find((x) => x.address === "stays@dest.test")!.id).status).toBe("delivered");
    expect(await suppressed()).toContainEqual(expect.objectContaining({ address: "gone@dest.test", reason: "hard_bounce" }));

    const seen = f.mx.rcptSeen.length;
    const again = await f.send({ envelope: "app@example.com", from: "app@example.com", to: ["gone@dest.test", "fresh@dest.test"], subject: "again", text: "hi", bouncetracking: true });
    expect(again.body.recipients).toEqual([
      expect.objectContaining({ address: "gone@dest.test", status: "suppressed" }),
      expect.objectContaining({ address: "fresh@dest.test", status: "queued" }),
    ]);
    await waitDelivered(f);
    expect(f.mx.rcptSeen.slice(seen)).toEqual(["fresh@dest.test"]);
    // nothing was queued for relay by the report, and no DSN went to anybody
    expect(f.mx.messages.some((m) => m.from === "")).toBe(false);
  });

  test("a real Postfix DSN from the corpus, rewritten to our recipient, bounces it (5.1.6, hard)", async () => {
    const sent = await tracked(["moved@dest.test"]);
    const path = returnPathsOf(["moved@dest.test"]).get("moved@dest.test")!;
    const dsn = readFileSync(join(CORPUS, "rfc3464-10.eml"), "latin1").replaceAll("kijitora@example.jp", "moved@dest.test");
    const r = await sendOverSmtp(f.smtpPort, "", [path], dsn);
    expect(r.data).toMatch(/^250 /);
    expect(rowOf(sent.recipients[0]!.id)).toEqual({ status: "bounced", last_status: "5.1.6" });
    const [bounced] = (await eventsOf(sent.id)).filter((e) => e.type === "bounced");
    expect(bounced!.details).toMatchObject({ status: "5.1.6", bounce_class: "hard", matched_by: "verp" });
  });

  test("a soft bounce (mailbox full) is recorded but does not suppress the address", async () => {
    const sent = await tracked(["full@dest.test"]);
    const path = returnPathsOf(["full@dest.test"]).get("full@dest.test")!;
    await sendOverSmtp(f.smtpPort, "", [path], dsnFor("full@dest.test", path, "5.2.2", "Mailbox full"));
    const [bounced] = (await eventsOf(sent.id)).filter((e) => e.type === "bounced");
    expect(bounced!.details).toMatchObject({ status: "5.2.2", bounce_class: "soft" });
    expect((await suppressed()).map((s) => s.address)).not.toContain("full@dest.test");
  });

  test("the same report twice records one bounce", async () => {
    const sent = await tracked(["twice@dest.test"]);
    const path = returnPathsOf(["twice@dest.test"]).get("twice@dest.test")!;
    for (let i = 0; i < 2; i++) expect((await sendOverSmtp(f.smtpPort, "", [path], dsnFor("twice@dest.test", path))).data).toMatch(/^250 /);
    expect((await eventsOf(sent.id)).filter((e) => e.type === "bounced")).toHaveLength(1);
  });

  test("an ARF complaint to the return path records complained and suppresses the address as a complaint", async () => {
    const sent = await tracked(["angry@dest.test"]);
    const path = returnPathsOf(["angry@dest.test"]).get("angry@dest.test")!;
    const arf = readFileSync(join(CORPUS, "arf-01.eml"), "latin1");
    expect((await sendOverSmtp(f.smtpPort, "", [path], arf)).data).toMatch(/^250 /);
    expect((await eventsOf(sent.id)).map((e) => e.type)).toContain("complained");
    expect(rowOf(sent.recipients[0]!.id).status).toBe("delivered");
    expect(await suppressed()).toContainEqual(expect.objectContaining({ address: "angry@dest.test", reason: "complaint" }));
  });

  test("a delay warning and an auto-reply to the return path change nothing and are not kept", async () => {
    const sent = await tracked(["slow@dest.test"]);
    const path = returnPathsOf(["slow@dest.test"]).get("slow@dest.test")!;
    const keptBefore = countKept();
    const delay = readFileSync(join(CORPUS, "rfc3464-07.eml"), "latin1").replaceAll("kijitora@example.net", "slow@dest.test");
    const vacation = readFileSync(join(CORPUS, "rfc3834-01.eml"), "latin1");
    for (const m of [delay, vacation]) expect((await sendOverSmtp(f.smtpPort, "", [path], m)).data).toMatch(/^250 /);
    expect((await eventsOf(sent.id)).map((e) => e.type)).toEqual(["queued", "delivered"]);
    expect(countKept()).toBe(keptBefore);
  });
});

function countKept(): number {
  return f.rt.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM inbound_mail").get()!.n;
}

describe("reports without a token, at abuse@ and postmaster@", () => {
  /** The Message-ID the fake MX received for `address`. */
  const messageIdSentTo = (address: string) =>
    /^Message-ID: (<[^>]+>)\r?$/m.exec(f.mx.messages.find((m) => m.to.includes(address))!.raw.toString())![1]!;

  test("an ARF complaint to abuse@ whose returned Message-ID and Original-Rcpt-To name our recipient records complained", async () => {
    const sent = await tracked(["fbl@dest.test", "other@dest.test"]);
    const r = await sendOverSmtp(f.smtpPort, "fbl@isp.test", [`abuse@${BOUNCE_DOMAIN}`], arfFor("fbl@dest.test", messageIdSentTo("fbl@dest.test")));
    expect(r.data).toMatch(/^250 /);
    const complained = (await eventsOf(sent.id)).filter((e) => e.type === "complained");
    expect(complained).toEqual([expect.objectContaining({ recipient: "fbl@dest.test", details: expect.objectContaining({ matched_by: "recipient" }) })]);
    expect(await suppressed()).toContainEqual(expect.objectContaining({ address: "fbl@dest.test", reason: "complaint" }));
  });

  test("a DSN to postmaster@ with the recipient rewritten bounces the only recipient of the message its Message-ID names", async () => {
    const sent = await tracked(["aliased@dest.test"]);
    const dsn = dsnFor("mailbox-17@store.dest.test", `postmaster@${BOUNCE_DOMAIN}`, "5.1.1", "User unknown", messageIdSentTo("aliased@dest.test"));
    expect((await sendOverSmtp(f.smtpPort, "", [`postmaster@${BOUNCE_DOMAIN}`], dsn)).data).toMatch(/^250 /);
    expect(rowOf(sent.recipients[0]!.id).status).toBe("bounced");
    const [bounced] = (await eventsOf(sent.id)).filter((e) => e.type === "bounced");
    expect(bounced!.details).toMatchObject({ matched_by: "message_id", status: "5.1.1" });
  });

  test("a report to postmaster@ naming a Message-ID that is not ours changes nothing and is kept", async () => {
    const before = countKept();
    const dsn = dsnFor("someone@dest.test", `postmaster@${BOUNCE_DOMAIN}`, "5.1.1", "User unknown", "<forged@elsewhere.test>");
    expect((await sendOverSmtp(f.smtpPort, "x@stranger.test", [`postmaster@${BOUNCE_DOMAIN}`], dsn)).data).toMatch(/^250 /);
    expect(countKept()).toBe(before + 1);
    expect((await suppressed()).map((s) => s.address)).not.toContain("someone@dest.test");
  });
});

describe("tokens at RCPT", () => {
  test("a forged, altered or truncated token is 550 5.1.1; the genuine one, upper-cased, is accepted", async () => {
    await tracked(["token@dest.test"]);
    const path = returnPathsOf(["token@dest.test"]).get("token@dest.test")!;
    const local = localOf(path);
    const altered = local.slice(0, -1) + (local.endsWith("0") ? "1" : "0");
    const r = await sendOverSmtp(f.smtpPort, "", [
      `b+${"0".repeat(36)}@${BOUNCE_DOMAIN}`,
      `${altered}@${BOUNCE_DOMAIN}`,
      `${local.slice(0, -3)}@${BOUNCE_DOMAIN}`,
      `${local.toUpperCase()}@${BOUNCE_DOMAIN.toUpperCase()}`,
    ], "Subject: x\r\n\r\nnot a report\r\n");
    expect(r.rcpt.map((x) => x.slice(0, 9))).toEqual(["550 5.1.1", "550 5.1.1", "550 5.1.1", "250 2.1.5"]);
  });

});

describe("bouncetracking needs a bounce domain", () => {
  test("the alias trackbounces is accepted where there is one", async () => {
    const res = await f.send({ envelope: "app@example.com", from: "app@example.com", to: ["alias@dest.test"], subject: "s", text: "t", trackbounces: true });
    expect(res.status).toBe(202);
    await waitDelivered(f);
    expect(returnPathsOf(["alias@dest.test"]).get("alias@dest.test")).toStartWith("b+");
  });

  test("without one, the API answers 400 naming the field and SMTP a 554 5.3.3; nothing is queued", async () => {
    const d = tempDir();
    const { rt, firstRun } = await startRuntime(testConfig(d.path, `[http]\nlisten = "127.0.0.1:0"\n[delivery]\nsandbox = true\n[smtp]\ntrusted_networks = ["127.0.0.40"]\n`));
    try {
      // the error names the field as the caller spelt it (the alias too)
      for (const field of ["bouncetracking", "trackbounces"]) {
        const res = await fetch(`http://127.0.0.1:${rt.http!.port}/v1/send`, {
          method: "POST",
          headers: { Authorization: `Bearer ${secretFrom(firstRun, "api key")}`, "Content-Type": "application/json" },
          body: JSON.stringify({ envelope: "app@example.com", to: "x@dest.test", subject: "s", text: "t", [field]: true }),
        });
        expect(res.status).toBe(400);
        expect(((await res.json()) as { error: { field: string } }).error.field).toBe(field);
      }
      const r = await sendOverSmtp(rt.smtp!.addresses()[0]!.port, "app@example.com", ["x@dest.test"],
        "X-Outpost-Track-Bounces: yes\r\nSubject: s\r\n\r\nt\r\n", "127.0.0.40");
      expect(r.data).toMatch(/^554 5\.3\.3 .*bounce_domain/);
      expect(rt.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM messages").get()!.n).toBe(0);
    } finally {
      await rt.stop();
      d.cleanup();
    }
  });
});
