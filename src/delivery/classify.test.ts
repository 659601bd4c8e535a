import { describe, expect, test } from "bun:test";
import { classifyReply, enhancedFor, matchRule } from "./classify.ts";

/** [code, enhanced, text, expected class] — the cases from real receivers that decided the rules. */
type Case = [number, string, string, ReturnType<typeof classifyReply>];

const table = (cases: Case[]) => {
  for (const [code, enhanced, text, want] of cases) {
    test(`${code} ${enhanced} "${text}" is ${want}`, () => {
      expect(classifyReply(code, enhanced, text)).toBe(want);
    });
  }
};

describe("success replies are ok", () => {
  table([
    [250, "2.0.0", "Ok: queued as 4Xyz", "ok"],
    [251, "", "User not local; will forward", "ok"],
  ]);
});

describe("permanent failures are every 5xx, whatever the text says", () => {
  table([
    [550, "5.1.1", "No such user here", "permanent"],
    [554, "5.7.1", "Relay access denied", "permanent"],
    [552, "5.2.2", "Mailbox full", "permanent"],
    [550, "5.7.1", "rate limit exceeded, too many messages", "permanent"],
  ]);
});

describe("a 421 is a throttle whatever its text", () => {
  table([
    [421, "4.7.0", "Try again later, closing connection", "throttle"],
    [421, "4.3.2", "Service not available", "throttle"],
    [421, "", "mx.example.net closing transmission channel", "throttle"],
  ]);
});

describe("4.7.x policy replies that ask us to slow down are throttles", () => {
  table([
    [450, "4.7.0", "Too many connections from your IP", "throttle"],
    [451, "4.7.500", "Server busy. Please try again later", "throttle"],
    [450, "4.7.1", "Rate limited, slow down", "throttle"],
    [451, "4.7.0", "Messages temporarily deferred due to unexpected volume", "throttle"],
  ]);
});

describe("server overload is a throttle", () => {
  table([
    [452, "4.3.1", "Insufficient system storage", "throttle"],
    [451, "", "Too many concurrent SMTP connections; please try again later", "throttle"],
    [450, "4.0.0", "Throttling failure: Daily message quota exceeded", "throttle"],
  ]);
});

describe("temporary problems that are not about our rate stay plain temporary", () => {
  table([
    [451, "4.7.1", "Greylisted, please try again later", "temporary"],
    [450, "4.2.0", "Recipient address rejected: Greylisted for 5 minutes", "temporary"],
    [452, "4.5.3", "Too many recipients", "temporary"],
    [452, "", "Error: too many recipients", "temporary"],
    [452, "4.2.2", "Mailbox full, try again later", "temporary"],
    [450, "4.2.1", "The user you are trying to contact is receiving mail too fast", "temporary"],
    [451, "4.3.0", "Local error in processing", "temporary"],
    [451, "4.3.0", "Temporary local problem, please try again later", "temporary"],
    [450, "4.1.1", "Recipient address rejected: unverified address", "temporary"],
  ]);
});

describe("no reply at all (network error, timeout) is temporary", () => {
  table([[0, "", "connect ECONNRESET", "temporary"]]);
});

describe("the rule that decided is reported by name", () => {
  // one row per rule, so removing or reordering a rule fails here even where the outcome would not change
  test.each([
    [421, "", "closing channel", "421 closes the channel"],
    [450, "4.2.0", "Greylisted for 5 minutes", "greylisting"],
    [452, "4.5.3", "Recipient limit reached", "too many recipients in one transaction"],
    [452, "", "Error: too many recipients", "too many recipients in one transaction"],
    [452, "4.2.2", "Mailbox full: too many messages", "one mailbox over quota"],
    [450, "4.2.1", "The user you are trying to contact is receiving mail too fast", "one mailbox receiving too fast"],
    [450, "4.7.1", "Rate limited, slow down", "policy rate limit"],
    [452, "4.3.1", "Insufficient system storage", "server busy or out of resources"],
    [451, "", "Too many concurrent SMTP connections", "connection or rate limit in the text"],
  ])("%i %s %j → %s", (code, enhanced, text, name) => {
    expect(matchRule(code, enhanced, text)?.name).toBe(name);
  });
  test("greylisting wins over the generic 'try again later' throttle", () => {
    expect(matchRule(451, "4.7.1", "Greylisted, please try again later")?.name).toBe("greylisting");
  });
  test("a plain 451 matches no rule", () => {
    expect(matchRule(451, "4.3.0", "Local error in processing")).toBeNull();
  });
});

describe("enhanced status codes", () => {
  test("the server's own code is kept when its class agrees", () => {
    expect(enhancedFor(550, "5.1.1")).toBe("5.1.1");
    expect(enhancedFor(451, " 4.7.500 ")).toBe("4.7.500");
  });
  test("a missing code is derived from the basic code", () => {
    expect(enhancedFor(250)).toBe("2.0.0");
    expect(enhancedFor(451, "")).toBe("4.0.0");
    expect(enhancedFor(554)).toBe("5.0.0");
  });
  test("a code whose class contradicts the basic code is replaced", () => {
    expect(enhancedFor(550, "4.2.2")).toBe("5.0.0");
    expect(enhancedFor(450, "garbage")).toBe("4.0.0");
  });
  test("no reply at all is 4.4.1, no answer from host", () => {
    expect(enhancedFor(0)).toBe("4.4.1");
  });
  test("an unexpected 3xx is a transient protocol problem", () => {
    expect(enhancedFor(354)).toBe("4.0.0");
  });
});
