import { describe, expect, test } from "bun:test";
import { decideRecipient, type RelayClient } from "./relay.ts";

const anonymous: RelayClient = { authenticated: false, trusted: false };
const authed: RelayClient = { authenticated: true, trusted: false };
const trusted: RelayClient = { authenticated: false, trusted: true };
/** the stand-in for bounce/verp.ts: only these tokens are ours */
const isValidBounceToken = (local: string) => /^b\+(AbC_123-x\.y=z|token)$/i.test(local);
const policy = { bounceDomain: "bounces.example.com", isValidBounceToken };

/** [address, client, expected reply or "accept"/"bounce"] */
const cases: Array<[string, RelayClient, string]> = [
  // no relay for strangers, whatever the address looks like
  ["user@gmail.com", anonymous, "554 5.7.1"],
  ["user%gmail.com@bounces.example.com", anonymous, "550 5.1.1"],
  ["gmail.com!user@bounces.example.com", anonymous, "550 5.1.1"],
  ['"user@gmail.com"@bounces.example.com', anonymous, "550 5.1.1"],
  ['"b+abc"@gmail.com', anonymous, "554 5.7.1"],
  ["b+abc@gmail.com", anonymous, "554 5.7.1"],
  ["user%bounces.example.com@gmail.com", anonymous, "554 5.7.1"],
  ["user@bounces.example.com.gmail.com", anonymous, "554 5.7.1"],
  ["user@sub.bounces.example.com", anonymous, "554 5.7.1"],
  ["user@[127.0.0.1]", anonymous, "554 5.7.1"],
  ["user@[IPv6:::1]", anonymous, "554 5.7.1"],
  ["user@gmail.com@bounces.example.com", anonymous, "501 5.1.3"],
  ["gmail.com!user", anonymous, "501 5.1.3"],
  ["user", anonymous, "501 5.1.3"],
  ["@bounces.example.com", anonymous, "501 5.1.3"],
  ["user@", anonymous, "501 5.1.3"],
  // the bounce domain: anyone may write, but only to what exists there
  ["b+AbC_123-x.y=z@bounces.example.com", anonymous, "bounce"],
  ["B+token@BOUNCES.EXAMPLE.COM", anonymous, "bounce"],
  ["postmaster@bounces.example.com", anonymous, "bounce"],
  ["Abuse@Bounces.Example.Com", anonymous, "bounce"],
  ["postmaster", anonymous, "bounce"],
  ["b+@bounces.example.com", anonymous, "550 5.1.1"],
  ["b+forged@bounces.example.com", anonymous, "550 5.1.1"],
  ["b+to/ken@bounces.example.com", anonymous, "550 5.1.1"],
  ["bx@bounces.example.com", anonymous, "550 5.1.1"],
  ["info@bounces.example.com", anonymous, "550 5.1.1"],
  ['"postmaster"@bounces.example.com', anonymous, "bounce"], // needless quotes: the same mailbox as postmaster@
  ["info@bounces.example.com", authed, "550 5.1.1"],
  // authenticated users and trusted networks relay anywhere (the address is passed on in canonical form)
  ["user@gmail.com", authed, "accept"],
  ["user@gmail.com", trusted, "accept"],
  ["user%other.example@gmail.com", authed, "accept"],
  ['"john..doe"@example.org', trusted, "accept"],
  ["user@bücher.example", authed, "accept"],
  ["user@[192.0.2.1]", authed, "accept"],
  ["user@-bad.example", authed, "501 5.1.3"],
  ["user@bad_domain.example", authed, "501 5.1.3"],
  ["user@[999.1.1.1]", authed, "501 5.1.3"],
];

describe("decideRecipient", () => {
  for (const [address, client, expected] of cases) {
    const who = client.authenticated ? "an authenticated user" : client.trusted ? "a trusted network" : "an anonymous client";
    test(`answers ${expected} to <${address}> from ${who}`, () => {
      const v = decideRecipient(address, client, policy);
      if (expected === "accept" || expected === "bounce") {
        expect(v.ok).toBe(true);
        if (v.ok) expect(v.kind).toBe(expected === "accept" ? "relay" : "bounce_domain");
      } else {
        expect(v.ok).toBe(false);
        if (!v.ok) expect(`${v.error.code} ${v.error.enhanced}`).toBe(expected);
      }
    });
  }

  test("the domainless <postmaster> becomes postmaster at the bounce domain", () => {
    const v = decideRecipient("PostMaster", anonymous, policy);
    expect(v.ok && v.address).toBe("postmaster@bounces.example.com");
  });

  test("without a bounce domain, nothing is open to anonymous clients", () => {
    const none = { bounceDomain: "", isValidBounceToken };
    expect(decideRecipient("b+abc@bounces.example.com", anonymous, none).ok).toBe(false);
    expect(decideRecipient("postmaster", anonymous, none).ok).toBe(false);
  });

  test("the bounce token check is a parameter: an invalid token is 550 5.1.1", () => {
    const strict = { bounceDomain: "bounces.example.com", isValidBounceToken: (l: string) => l === "b+good" };
    expect(decideRecipient("b+good@bounces.example.com", anonymous, strict).ok).toBe(true);
    const bad = decideRecipient("b+forged@bounces.example.com", anonymous, strict);
    expect(!bad.ok && bad.error.toString()).toStartWith("550 5.1.1");
  });
});

test("an accepted address comes back in canonical form: needless quotes dropped, domain in lower-case A-labels", () => {
  const v = decideRecipient('"Jörg"@Bücher.Example', authed, policy);
  expect(v.ok && v.address).toBe("Jörg@xn--bcher-kva.example");
  const b = decideRecipient('"b+token"@BOUNCES.example.com', anonymous, policy);
  expect(b.ok && b.address).toBe("b+token@bounces.example.com");
});

test("a malformed or over-long address is 501 5.1.3 saying why", () => {
  const v = decideRecipient(`${"a".repeat(65)}@example.com`, authed, policy);
  expect(!v.ok && v.error.toString()).toBe("501 5.1.3 bad address syntax: local part longer than 64 octets");
});

describe("one transaction, one kind of recipient", () => {
  test("a bounce-domain recipient after a relayed one is 452 4.5.3: send it in a separate transaction", () => {
    const v = decideRecipient("postmaster", authed, policy, "relay");
    expect(!v.ok && v.error.toString()).toMatch(/^452 4\.5\.3 .*separate transaction/);
  });

  test("a relayed recipient after a bounce-domain one is 452 4.5.3", () => {
    const v = decideRecipient("user@gmail.com", authed, policy, "bounce_domain");
    expect(!v.ok && v.error.toString()).toMatch(/^452 4\.5\.3 .*separate transaction/);
  });

  test("a recipient that is refused anyway gets its own refusal, not 452", () => {
    const stranger = decideRecipient("user@gmail.com", anonymous, policy, "bounce_domain");
    expect(!stranger.ok && stranger.error.code).toBe(554);
    const nobody = decideRecipient("info@bounces.example.com", authed, policy, "relay");
    expect(!nobody.ok && nobody.error.code).toBe(550);
  });

  test("recipients of the same kind go together", () => {
    expect(decideRecipient("abuse@bounces.example.com", anonymous, policy, "bounce_domain").ok).toBe(true);
    expect(decideRecipient("b@gmail.com", trusted, policy, "relay").ok).toBe(true);
  });
});
