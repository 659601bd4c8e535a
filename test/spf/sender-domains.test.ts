/**
 * Per-user sender domains: a user limited to some domains may use them in the envelope sender and in the
 * From/Sender header fields only (SMTP `553 5.7.1`, API 403 naming `from`), subdomains when listed as `*.D`; and
 * with `spf.require_verified_domains`, only once the domain's check has passed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startApi, type ApiFixture } from "../api/fixture.ts";
import { startDnsServer, type FakeDns } from "../helpers/dns-server.ts";
import { hasCommand, run } from "../smtp/fixture.ts";

const INCLUDE = "_senderspf.outpost.test";

let dns: FakeDns;
beforeAll(async () => {
  dns = await startDnsServer({ [INCLUDE]: { txt: ["v=spf1 ip4:203.0.113.7 ~all"] } });
});
afterAll(async () => {
  await dns?.stop();
});

function config(extra = ""): string {
  return `[dns]\nservers = ["127.0.0.1:${dns.port}"]\n[spf]\ninclude_domain = "${INCLUDE}"\nips = ["203.0.113.7"]\n${extra}`;
}

/** swaks as the user, with these header lines; the last reply line and the exit code. */
async function smtpSend(f: ApiFixture, user: string, from: string, headers: string[]): Promise<{ code: number; out: string }> {
  const port = f.rt.smtp!.addresses()[0]!.port;
  const args = ["swaks", "--server", `127.0.0.1:${port}`, "--tls", "--auth", "PLAIN", "--auth-user", user, "--auth-password", `pw-${user}`,
    "--from", from, "--to", "rcpt@example.org", "--header", "Subject: hi", "--body", "hi"];
  for (const h of headers) args.push("--header", h);
  const r = await run(args);
  return { code: r.code, out: r.stdout };
}

const mime = (headers: string) => `${headers}\r\nTo: rcpt@example.org\r\nSubject: hi\r\n\r\nhi\r\n`;

describe("From and Sender must be in the user's sender domains", () => {
  let f: ApiFixture;
  let key: string;
  beforeAll(async () => {
    f = await startApi(config());
    key = await f.addUser("ann", ["example.com", "*.apps.example.com"]);
  });
  afterAll(async () => {
    await f?.stop();
  });

  test.skipIf(!hasCommand("swaks"))("over SMTP a From or Sender outside them is 553 5.7.1; a listed *.D subdomain is accepted", async () => {
    const foreign = await smtpSend(f, "ann", "app@example.com", ["From: Boss <boss@bank.test>"]);
    expect(foreign.out).toMatch(/<~\*? ?553 5\.7\.1 From: header <boss@bank\.test> is not in this user's sender domains/);
    const sender = await smtpSend(f, "ann", "app@example.com", ["From: app@example.com", "Sender: relay@other.test"]);
    expect(sender.out).toMatch(/553 5\.7\.1 Sender: header <relay@other\.test>/);
    const sub = await smtpSend(f, "ann", "app@example.com", ["From: news@mail.apps.example.com"]);
    expect(sub.code).toBe(0);
    expect(sub.out).toMatch(/250 2\.0\.0 Ok: queued as/);
    // "*.apps.example.com" covers its subdomains, not apps.example.com itself
    const parent = await smtpSend(f, "ann", "app@example.com", ["From: news@apps.example.com"]);
    expect(parent.out).toMatch(/553 5\.7\.1 From: header <news@apps\.example\.com>/);
  });

  test("over the API a From outside them is a 403 naming from, structured fields and MIME bodies alike", async () => {
    const structured = await f.call("POST", "/v1/send", { envelope: "app@example.com", from: "Boss <boss@bank.test>", to: "rcpt@example.org", subject: "hi", text: "hi" }, { key });
    expect(structured.status).toBe(403);
    expect(((await structured.json()) as { error: { field: string; message: string } }).error).toMatchObject({ field: "from", message: expect.stringContaining("boss@bank.test") });
    const body = await f.call("POST", "/v1/send", { envelope: "app@example.com", body: mime("From: app@example.com\r\nSender: x@bank.test") }, { key });
    expect(body.status).toBe(403);
    expect(((await body.json()) as { error: { field: string } }).error.field).toBe("from");
    const ok = await f.call("POST", "/v1/send", { envelope: "app@example.com", from: "app@x.apps.example.com", to: "rcpt@example.org", subject: "hi", text: "hi" }, { key });
    expect(ok.status).toBe(202);
  });

  test("a user without sender domains, and the admin, may write any From", async () => {
    const free = await f.addUser("bob");
    const res = await f.call("POST", "/v1/send", { envelope: "anyone@anywhere.test", from: "anyone@anywhere.test", to: "rcpt@example.org", subject: "hi", text: "hi" }, { key: free });
    expect(res.status).toBe(202);
  });
});

describe("spf.require_verified_domains", () => {
  let f: ApiFixture;
  let key: string;
  beforeAll(async () => {
    dns.zones["fresh.test"] = { a: ["192.0.2.1"] }; // no SPF record yet
    dns.zones["ready.test"] = { txt: [`v=spf1 include:${INCLUDE} a mx ~all`] };
    dns.zones["_dmarc.ready.test"] = { txt: ["v=DMARC1; p=none; rua=mailto:d@ready.test"] };
    f = await startApi(config("require_verified_domains = true\n"));
    key = await f.addUser("dan", ["fresh.test", "ready.test"]);
  });
  afterAll(async () => {
    await f?.stop();
  });

  const send = (from: string) => f.call("POST", "/v1/send", { envelope: from, from, to: "rcpt@example.org", subject: "hi", text: "hi" }, { key });

  test("a domain whose check passes is verified on first use", async () => {
    expect((await send("app@ready.test")).status).toBe(202);
  });

  test("a domain whose check has never passed is refused, saying to run the check; once it passes, mail is accepted", async () => {
    const refused = await send("app@fresh.test");
    expect(refused.status).toBe(403);
    const error = ((await refused.json()) as { error: { message: string } }).error;
    expect(error.message).toMatch(/sender domain fresh\.test is not verified.*publishes no SPF record.*outpost spf check fresh\.test/);
    if (hasCommand("swaks")) {
      const smtp = await smtpSend(f, "dan", "app@fresh.test", []);
      expect(smtp.out).toMatch(/553 5\.7\.1 sender domain fresh\.test is not verified/);
    }
    dns.zones["fresh.test"] = { txt: [`v=spf1 include:${INCLUDE} a mx ~all`] };
    // within the retry interval intake does not check again by itself: the user runs the check
    expect((await send("app@fresh.test")).status).toBe(403);
    // the API app of this fixture has its own DNS answer cache, which has not seen fresh.test yet
    const check = await f.call("GET", "/v1/domains/fresh.test/check", undefined, { key });
    const report = (await check.json()) as { result: string; findings: unknown[] };
    expect(report.result).toBe("pass");
    expect((await send("app@fresh.test")).status).toBe(202);
  });
});
