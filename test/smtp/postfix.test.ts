/**
 * A real Postfix as a smart-host client: a private instance (own config and queue directories in a temp dir)
 * set up with docs/smtp.md's Postfix recipe exactly as written there (relayhost, SASL with a hash: map made by
 * postmap, smtp_tls_security_level = encrypt), only its host, port, login and paths replaced. A message given
 * to its sendmail must arrive in outpost's queue intact.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { waitFor } from "../helpers/harness.ts";
import { addTestUser, messagesFrom, recipientsOf, run, startOutpost, type Outpost } from "./fixture.ts";
import { postfixUnavailable, privatePostfix, type PostfixInstance } from "./private-postfix.ts";
import { recipe, recipeLines, type RecipeValues } from "./recipes.ts";

const skip = postfixUnavailable();
if (skip) console.warn(`skipping the Postfix smart-host test: ${skip}`);

describe.skipIf(skip !== null)("Postfix as a smart-host client", () => {
  let o: Outpost;
  let pf: PostfixInstance;

  beforeAll(async () => {
    o = await startOutpost();
    await addTestUser(o, "relayuser", "relay-secret-77");
    const outpost: RecipeValues = { host: "127.0.0.1", port: o.port };
    const etc = (dir: string): RecipeValues => ({ paths: { "/etc/postfix": dir } });
    pf = privatePostfix({
      main: [
        // the instance's own settings (private-postfix.ts adds its directories), then the recipe's lines
        "myhostname = app-server.test",
        "inet_interfaces = 127.0.0.1",
        "smtp_tls_loglevel = 1",
        ...recipeLines("postfix main.cf", { ...outpost, ...etc("$config_directory") }),
      ],
      files: { sasl_passwd: recipe("postfix sasl_passwd", { ...outpost, user: "relayuser", password: "relay-secret-77" }) },
    });
    await pf.start();
    // the recipe's commands, on this instance's files (MAIL_CONFIG: postmap and postfix use its main.cf)
    for (const line of recipeLines("postfix commands", etc(pf.configDir))) {
      const r = await run(["sh", "-c", line], { env: { MAIL_CONFIG: pf.configDir, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
      if (r.code !== 0) throw new Error(`${line}: exit ${r.code}: ${r.stderr}`);
    }
  }, 30_000);

  afterAll(async () => {
    await pf?.stop();
    pf?.cleanup();
    await o?.stop();
  });

  test("a message submitted with Postfix's sendmail arrives in outpost's queue intact, over TLS with AUTH", async () => {
    const body = [
      "Hello from Postfix.",
      ".a line that starts with a dot survives dot-stuffing",
      "..and one with two dots",
      "Ünïcödé in 8-bit UTF-8: grüße, 日本語",
      "x".repeat(900),
      "",
      "last line",
    ].join("\r\n");
    const message = [
      "From: App <app@example.org>",
      "To: customer@example.com, other@example.net",
      "Subject: via postfix smart host",
      "Message-ID: <pf-test-1@app-server.test>",
      "Date: Wed, 25 Nov 2026 12:00:00 +0000",
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=utf-8",
      "Content-Transfer-Encoding: 8bit",
      "X-Outpost-Track-Opens: yes",
      "",
      body,
      "",
    ].join("\r\n");
    const r = await pf.sendmail(["-f", "app@example.org", "customer@example.com", "other@example.net"], message);
    expect(r).toEqual({ code: 0, stderr: "" });

    const rows = await waitFor(() => {
      const m = messagesFrom(o, "app@example.org");
      return m.length > 0 ? m : null;
    }, 20_000, `the message in outpost's queue; postfix log:\n${pf.log()}`);
    expect(rows).toHaveLength(1);
    const row = rows[0]!;
    expect(row.subject).toBe("via postfix smart host");
    expect(row.track_opens).toBe(1);
    expect(recipientsOf(o, row.id)).toEqual(["customer@example.com", "other@example.net"]);

    const stored = Buffer.from(row.body).toString("utf8");
    const [head = "", ...rest] = stored.split("\r\n\r\n");
    expect(rest.join("\r\n\r\n")).toBe(body + "\r\n");
    for (const h of message.split("\r\n\r\n")[0]!.split("\r\n").filter((l) => !l.startsWith("X-Outpost"))) {
      expect(head.split("\r\n")).toContain(h);
    }
    expect(head).not.toContain("X-Outpost");
    // Postfix's own Received line, then ours on top
    expect(head).toMatch(/^Received: from app-server\.test \(\[127\.0\.0\.1\]\)\r\n\tby outpost\.test \(outpost\) with ESMTPSA \(TLSv1\.3/);
    expect(head).toMatch(/\r\nReceived: by app-server\.test \(Postfix/);

    const auth = o.logs.find((l) => l.event === "smtp_auth" && l.user === "relayuser");
    expect(auth).toMatchObject({ method: expect.stringMatching(/^(PLAIN|LOGIN)$/), tls: true });
    expect(pf.log()).toMatch(/Trusted|Untrusted|Anonymous TLS connection established to 127\.0\.0\.1/);
  }, 40_000);
});
