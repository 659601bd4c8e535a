/**
 * docs/smtp.md's smart-host recipes for msmtp (an application's `sendmail`) and Exim, run exactly as written
 * there with only host, port, login, sender and paths replaced (test/smtp/recipes.ts): a message handed to each
 * must arrive in outpost's queue over TLS, logged in as the recipe's user. (Postfix's recipe: postfix.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { selfSignedCertificate } from "../../src/smtp/self-signed.ts";
import { tempDir, waitFor } from "../helpers/harness.ts";
import { addTestUser, messagesFrom, recipientsOf, run, startOutpost, type MessageRow, type Outpost } from "./fixture.ts";
import { eximUnavailable, privateExim } from "./private-exim.ts";
import { recipe, recipeLines } from "./recipes.ts";

const MSMTP = "/usr/bin/msmtp";
const msmtpMissing = Bun.which("msmtp") === null ? "msmtp is not installed (Debian package msmtp; .ci/run installs it)" : null;
if (msmtpMissing) console.warn(`skipping the msmtp recipe test: ${msmtpMissing}`);
const eximMissing = eximUnavailable();
if (eximMissing) console.warn(`skipping the Exim recipe test: ${eximMissing}`);

/** a password as `outpost user add` generates them (base64url) */
const PASSWORD = "Rc9-pw_for_the_app";

let o: Outpost;
let dir: ReturnType<typeof tempDir>;
/** outpost's certificate, for `localhost`: what a client that checks certificates is told to trust */
let certFile: string;

beforeAll(async () => {
  dir = tempDir();
  certFile = join(dir.path, "outpost.crt");
  const pems = selfSignedCertificate("localhost");
  writeFileSync(certFile, pems.cert);
  writeFileSync(join(dir.path, "outpost.key"), pems.key);
  o = await startOutpost(`[smtp]\ntls_cert = "${certFile}"\ntls_key = "${join(dir.path, "outpost.key")}"\n`);
});

afterAll(async () => {
  await o?.stop();
  dir?.cleanup();
});

/** The one message from `sender` once it is in outpost's queue. */
async function queuedFrom(sender: string, log: () => string): Promise<MessageRow> {
  const rows = await waitFor(() => {
    const m = messagesFrom(o, sender);
    return m.length > 0 ? m : null;
  }, 20_000, `the message from ${sender} in outpost's queue; client log:\n${log()}`);
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

function headerOf(row: MessageRow): string {
  return Buffer.from(row.body).toString("utf8").split("\r\n\r\n")[0]!;
}

/** outpost's own trace line says TLS and AUTH (ESMTPSA), and its log says `user` logged in over TLS. */
function expectTlsAndLogin(row: MessageRow, user: string): void {
  expect(headerOf(row)).toMatch(/^Received: from \S+ \(\[127\.0\.0\.1\]\)\r\n\tby outpost\.test \(outpost\) with ESMTPSA \(TLS/);
  expect(o.logs.find((l) => l.event === "smtp_auth" && l.user === user)).toMatchObject({ tls: true });
}

describe.skipIf(msmtpMissing !== null)("msmtp as an application's sendmail", () => {
  test("a message piped to the recipe's sendmail command arrives in outpost's queue, recipients from its header, Bcc removed", async () => {
    await addTestUser(o, "msmtp-app", PASSWORD);
    const home = join(dir.path, "msmtp-home");
    await run(["mkdir", "-p", home]);
    const rc = recipe("msmtprc", {
      host: "localhost", port: o.port, user: "msmtp-app", password: PASSWORD, sender: "app@msmtp.test",
      paths: { "/etc/ssl/certs/ca-certificates.crt": certFile },
    });
    // the user's own ~/.msmtprc (the recipe's /etc/msmtprc needs root): same syntax, and msmtp wants it private
    writeFileSync(join(home, ".msmtprc"), rc, { mode: 0o600 });
    const command = recipeLines("msmtp sendmail", { paths: { "/usr/bin/msmtp": MSMTP } })[0]!.split(" ");
    const message = [
      "From: App <app@msmtp.test>",
      "To: customer@example.com",
      "Bcc: hidden@example.net",
      "Subject: via msmtp",
      "",
      "Hello from msmtp.",
      "",
    ].join("\r\n");
    const r = await run(command, { stdin: message, env: { HOME: home, XDG_CONFIG_HOME: join(home, ".config") } });
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });

    const row = await queuedFrom("app@msmtp.test", () => r.stderr);
    expect(row.subject).toBe("via msmtp");
    expect(recipientsOf(o, row.id)).toEqual(["customer@example.com", "hidden@example.net"]);
    expect(headerOf(row)).not.toContain("Bcc:");
    expectTlsAndLogin(row, "msmtp-app");
  }, 30_000);
});

describe.skipIf(eximMissing !== null)("Exim with a smart-host router", () => {
  test("a message submitted to Exim arrives in outpost's queue over TLS with AUTH", async () => {
    await addTestUser(o, "exim-app", PASSWORD);
    const exim = privateExim();
    try {
      const passwd = join(exim.dir, "passwd.client");
      const paths = { "/etc/exim4/passwd.client": passwd };
      writeFileSync(passwd, recipe("exim passwd.client", { host: "127.0.0.1", user: "exim-app", password: PASSWORD }));
      exim.shareWithExim(passwd);
      exim.configure({
        routers: recipe("exim routers", { host: "127.0.0.1", port: o.port }),
        transports: recipe("exim transports", {}),
        authenticators: recipe("exim authenticators", { paths }),
      });
      const message = ["From: App <app@exim.test>", "To: customer@example.com", "Subject: via exim", "", "Hello from Exim.", ""].join("\n");
      const r = await exim.submit(["-f", "app@exim.test", "customer@example.com"], message);
      expect(r).toMatchObject({ code: 0 });

      const row = await queuedFrom("app@exim.test", () => exim.log());
      expect(row.subject).toBe("via exim");
      expect(recipientsOf(o, row.id)).toEqual(["customer@example.com"]);
      expectTlsAndLogin(row, "exim-app");
    } finally {
      exim.cleanup();
    }
  }, 40_000);
});
