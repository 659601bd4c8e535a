import { describe, expect, test } from "bun:test";
import { BOUNCE_RULES, classifyFailure, matchBounceRule, severityOf, type BounceClass } from "./rules.ts";

/** [code (0: none), enhanced status ("" none), text, expected class] — replies seen from real receivers. */
type Case = [number, string, string, BounceClass];

const table = (cases: Case[]) => {
  for (const [code, status, text, want] of cases) {
    test(`${code || "no code"} ${status || "no status"} "${text}" is ${want}`, () => {
      expect(classifyFailure({ code: code || undefined, status, text })).toBe(want);
    });
  }
};

describe("the address itself is bad: hard", () => {
  table([
    [550, "5.1.1", "<a@example.net>: Recipient address rejected: User unknown in virtual mailbox table", "hard"],
    [550, "5.1.2", "Host or domain name not found. Name service error", "hard"],
    [553, "5.1.3", "The recipient address <a@@example.net> is not a valid RFC 5321 address", "hard"],
    [550, "5.1.6", "recipient no longer on server: a@example.net", "hard"],
    [0, "5.1.10", "domain example.net accepts no mail (null MX)", "hard"],
    [0, "5.4.4", "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)", "hard"],
  ]);
});

describe("the text says the user does not exist: hard, even with a vague or missing code", () => {
  table([
    [550, "", "Unknown user kijitora@example.ne.jp", "hard"],
    [550, "5.0.0", "Requested action not taken: mailbox unavailable", "hard"],
    [550, "5.2.1", "<a@example.net>... User Unknown", "hard"],
    [550, "", "'a@example.net' is not a registered gateway user", "hard"],
    [550, "5.4.1", "[a@example.org]: Recipient address rejected: Access denied [x.prod.protection.outlook.com]", "hard"],
    [550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "hard"],
    [550, "", "Host unknown (Authoritative answer from name server)", "hard"],
    [0, "", "User some.name (a@example.jp) not listed in Domino Directory", "hard"],
    [0, "", "The recipient name is not recognized", "hard"],
    [554, "", "delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0]", "hard"],
    [550, "", "sorry, no mailbox here by that name. (#5.7.17)", "hard"],
  ]);
});

describe("a policy refusal (5.7.x) is soft unless its text says the user does not exist", () => {
  table([
    [554, "5.7.1", "Relay access denied", "soft"],
    [550, "5.7.1", "Message rejected due to domain's DMARC policy", "soft"],
    [550, "5.7.1", "<a@example.net>: Recipient address rejected: Access denied", "soft"],
    [550, "5.7.1", "<a@example.net>: Recipient address rejected: User unknown in local recipient table", "hard"],
  ]);
});

describe("a full mailbox is soft, even as 5xx or under a 5.1.1", () => {
  table([
    [552, "5.2.2", "Mailbox full", "soft"],
    [550, "5.2.2", "STOREDRV.Deliver: mailbox full", "soft"],
    [552, "5.1.1", "<a@example.net>... Recipient overquota", "soft"],
    [550, "", "Disk quota exceeded", "soft"],
    [0, "4.3.0", "Quota exceeded message delivery failed to /var/mail/box/u/INBOX", "soft"],
  ]);
});

describe("a refusal of the sender never condemns the recipient", () => {
  table([
    [550, "5.1.0", "<bounce@mailer.example.com> sender rejected", "soft"],
    [553, "5.1.8", "<x@example.org>: Sender address rejected: Domain not found", "soft"],
    [550, "5.1.1", "Sender verify failed", "soft"],
  ]);
});

describe("a blocklisted IP or spam verdict is about us, not the address", () => {
  table([
    [554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", "soft"],
    [550, "5.2.1", "Mailbox unavailable. Your IP address 192.0.2.1 is blacklisted using SPAMHAUS-XBL", "soft"],
    [554, "5.7.1", "<a@example.net>: Recipient address rejected: https://www.spamhaus.org/query/ip/192.0.2.1", "soft"],
    [550, "", "Message rejected as spam", "soft"],
  ]);
});

describe("a temporary failure is never hard, whatever its text says", () => {
  table([
    [450, "4.1.1", "Recipient address rejected: unverified address", "soft"],
    [451, "", "User unknown, try again later", "soft"],
    [0, "4.4.7", "message expired after 5d in the queue", "soft"],
    [0, "", "retry timeout exceeded", "soft"],
    [0, "4.4.1", "connect to example.com[192.0.2.1]:25: Connection timed out", "soft"],
  ]);
});

describe("throttles are the scheduler's: the server wants less from us", () => {
  table([
    [421, "4.7.0", "Try again later, closing connection", "throttle"],
    [450, "4.7.0", "Too many connections from your IP", "throttle"],
    [452, "4.3.1", "Insufficient system storage", "throttle"],
    [451, "4.7.1", "Greylisted, please try again later", "soft"],
    [450, "4.2.1", "The user you are trying to contact is receiving mail too fast", "soft"],
  ]);
});

describe("a success is not a bounce", () => {
  table([
    [250, "2.1.5", "Ok", "not_bounce"],
    [0, "2.0.0", "delivered", "not_bounce"],
  ]);
});

describe("a failure no row knows is soft: an unknown reason never suppresses", () => {
  table([
    [554, "", "Remote protocol error: Connection reset by peer", "soft"],
    [0, "", "エラー(テストメッセージとしての)", "soft"],
    [550, "5.0.0", "", "soft"],
  ]);
});

describe("the table", () => {
  test("names the rule that decided", () => {
    expect(matchBounceRule({ code: 550, status: "5.1.1", text: "no such user" })?.name).toBe("no such mailbox, domain or address (5.1.1, 5.1.2, 5.1.3)");
    expect(matchBounceRule({ code: 550, status: "5.1.0", text: "sender rejected" })?.name).toBe("the sender is refused, not the recipient");
    expect(matchBounceRule({ code: 554, status: "", text: "Service unavailable" })).toBeNull();
  });

  test("has a plain-English name and a verdict on every row", () => {
    for (const rule of BOUNCE_RULES) {
      expect(rule.name).toMatch(/^[a-z0-9 ]/);
      expect(["hard", "soft", "throttle", "not_bounce"]).toContain(rule.verdict);
    }
  });

  test("gives a hard verdict only to rows that never see a temporary reply", () => {
    for (const rule of BOUNCE_RULES.filter((r) => r.verdict === "hard")) expect(rule.on).not.toContain("transient");
    for (const rule of BOUNCE_RULES.filter((r) => r.verdict === "hard")) expect(rule.on).toBeDefined();
  });

  test("takes the severity from the basic code first, then from the enhanced code", () => {
    expect(severityOf({ code: 450, status: "5.1.1", text: "" })).toBe("transient");
    expect(severityOf({ status: "5.1.1", text: "" })).toBe("permanent");
    expect(severityOf({ code: 354, status: "4.0.0", text: "" })).toBe("transient");
    expect(severityOf({ text: "user unknown" })).toBe("unknown");
  });
});
