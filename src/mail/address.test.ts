import { describe, expect, test } from "bun:test";
import { SmtpError } from "./errors.ts";
import { addressKey, canonicalAddress, checkAddress, DOMAIN_CACHE_SIZE, domainCacheSize, domainOf, parseAddress } from "./address.ts";

describe("canonical form and key", () => {
  // input → [canonical, key]
  const table: [string, string, string][] = [
    ["a@example.com", "a@example.com", "a@example.com"],
    ["Foo@X.Example", "Foo@x.example", "foo@x.example"],
    ["foo@bücher.example", "foo@xn--bcher-kva.example", "foo@xn--bcher-kva.example"],
    ["foo@BÜCHER.example", "foo@xn--bcher-kva.example", "foo@xn--bcher-kva.example"],
    ['"FOO"@XN--BCHER-KVA.EXAMPLE', "FOO@xn--bcher-kva.example", "foo@xn--bcher-kva.example"],
    ['"john"@x.example', "john@x.example", "john@x.example"],
    ['"first.last+tag"@x.example', "first.last+tag@x.example", "first.last+tag@x.example"],
    ['"j\\ohn"@x.example', "john@x.example", "john@x.example"],
    ['"john doe"@x.example', '"john doe"@x.example', '"john doe"@x.example'],
    ['"John\\ Doe"@x.example', '"John Doe"@x.example', '"john doe"@x.example'],
    ['"a@b"@x.example', '"a@b"@x.example', '"a@b"@x.example'],
    ['"a\\"b"@x.example', '"a\\"b"@x.example', '"a\\"b"@x.example'],
    ['"a..b"@x.example', '"a..b"@x.example', '"a..b"@x.example'],
    ['"victim%gmail.com"@x.example', "victim%gmail.com@x.example", "victim%gmail.com@x.example"],
    ["JÖRG@bücher.example", "JÖRG@xn--bcher-kva.example", "jörg@xn--bcher-kva.example"],
    ["x@ｅｘａｍｐｌｅ.com", "x@example.com", "x@example.com"],
    ["o'brien@example.ie", "o'brien@example.ie", "o'brien@example.ie"],
    ["x@localhost", "x@localhost", "x@localhost"],
    ["user@[192.0.2.1]", "user@[192.0.2.1]", "user@[192.0.2.1]"],
    ["user@[ipv6:2001:DB8::1]", "user@[IPv6:2001:db8::1]", "user@[ipv6:2001:db8::1]"],
  ];
  for (const [input, canonical, key] of table) {
    test(`${JSON.stringify(input)} is stored as ${JSON.stringify(canonical)} and compared as ${JSON.stringify(key)}`, () => {
      expect(canonicalAddress(input)).toBe(canonical);
      expect(addressKey(input)).toBe(key);
    });
  }
});

describe("refused", () => {
  // input → a word of the reason
  const table: [string, string][] = [
    ["", "local-part@domain"],
    ["a", "local-part@domain"],
    ["@example.com", "local part"],
    ["a@", "domain"],
    ["a b@example.com", "local part"],
    [".a@example.com", "local part"],
    ["a.@example.com", "local part"],
    ["a..b@example.com", "local part"],
    ["a@b@example.com", "domain"],
    ["<a@example.com>", "local part"],
    ['""@example.com', "empty local part"],
    ['"unterminated@example.com', "unterminated"],
    ['"a"b@example.com', "expected @"],
    ["a@example.com\r\n", "CR or LF"],
    ["a\nb@example.com", "CR or LF"],
    ['"a\rb"@example.com', "CR or LF"],
    ["a\u0000b@example.com", "control character"],
    ["a\tb@example.com", "control character"],
    ["a\u007fb@example.com", "control character"],
    ["a\u200bb@example.com", "control character"],
    ["a@-example.com", "domain"],
    ["a@example-.com", "domain"],
    ["a@exa mple.com", "domain"],
    ["a@a_b.example", "domain"],
    ["a@a%41.example", "domain"],
    ["a@example.com.", "domain"],
    ["a@xn--zz.example", "domain"],
    ["a@[300.1.1.1]", "domain"],
    ["a@[::1]", "domain"],
  ];
  for (const [input, why] of table) {
    test(`${JSON.stringify(input)}: ${why}`, () => {
      const p = parseAddress(input);
      expect(p.ok).toBe(false);
      if (!p.ok) expect(p.reason).toContain(why);
      expect(canonicalAddress(input)).toBeNull();
    });
  }
});

describe("RFC 5321 §4.5.3.1 lengths, counted in octets of the canonical form", () => {
  const local64 = "a".repeat(64);
  const label63 = "d".repeat(63);

  test("a 64-octet local part passes and 65 is refused", () => {
    expect(parseAddress(`${local64}@example.com`).ok).toBe(true);
    expect(parseAddress(`a${local64}@example.com`)).toEqual({ ok: false, reason: "local part longer than 64 octets" });
  });

  test("quotes that are dropped do not count", () => {
    expect(parseAddress(`"${local64}"@example.com`).ok).toBe(true);
  });

  test("a path over 256 octets is refused, counting the angle brackets", () => {
    const domain = [label63, label63, label63, "d".repeat(55)].join("."); // 247 octets
    expect(parseAddress(`abcdefg@${domain}`)).toEqual({ ok: false, reason: "path longer than 256 octets" });
    expect(parseAddress(`abcdef@${domain}`).ok).toBe(true);
  });

  test("UTF-8 counts in octets: 33 × é is 66", () => {
    expect(parseAddress(`${"é".repeat(33)}@example.com`)).toEqual({ ok: false, reason: "local part longer than 64 octets" });
    expect(parseAddress(`${"é".repeat(32)}@example.com`).ok).toBe(true);
  });

  test("an IDN domain counts in A-labels", () => {
    // 60 × ü is a 60-character label but a 68-octet A-label: too long for DNS
    expect(parseAddress(`a@${"ü".repeat(60)}.example`).ok).toBe(false);
  });
});

test("addressKey keys what does not parse by its trimmed lower-case self", () => {
  expect(addressKey(" PostMaster ")).toBe("postmaster");
});

test("domainOf is what follows the last @, lower-cased", () => {
  expect(domainOf('"a@b"@X.Example')).toBe("x.example");
  expect(domainOf("postmaster")).toBe("");
});

test("checkAddress answers 501 with the enhanced code of the command", () => {
  expect(checkAddress("a..b@example.com", "5.1.3")).toBeInstanceOf(SmtpError);
  expect(String(checkAddress(`${"a".repeat(65)}@example.com`, "5.1.7"))).toBe("501 5.1.7 bad address syntax: local part longer than 64 octets");
  expect(checkAddress('"Ann"@Example.COM', "5.1.3")).toEqual({ local: "Ann", domain: "example.com", canonical: "Ann@example.com", key: "ann@example.com" });
});

describe("the cache of checked domains", () => {
  test("a domain asked again gets the same answer, a refusal included", () => {
    for (let i = 0; i < 2; i++) {
      expect(canonicalAddress("a@Bücher.Example")).toBe("a@xn--bcher-kva.example");
      expect(canonicalAddress("b@BÜCHER.example")).toBe("b@xn--bcher-kva.example");
      expect(parseAddress("a@exa%41mple.com")).toEqual({ ok: false, reason: '"exa%41mple.com" is not a valid domain' });
    }
  });
  test("a flood of distinct domains stays within the bound and every answer stays right", () => {
    for (let i = 0; i < DOMAIN_CACHE_SIZE + 10; i++) {
      expect(canonicalAddress(`a@Host-${i}.Example`)).toBe(`a@host-${i}.example`);
      expect(domainCacheSize()).toBeLessThanOrEqual(DOMAIN_CACHE_SIZE);
    }
    expect(canonicalAddress("a@host-0.example")).toBe("a@host-0.example");
    expect(canonicalAddress("a@-host.example")).toBeNull();
  });
});

describe("the remembered answers of parseAddress", () => {
  test("an address asked again gets the same answer, which no caller can change", () => {
    const first = parseAddress("Ann@Bücher.Example");
    expect(parseAddress("Ann@Bücher.Example")).toEqual(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(() => {
      (first as { canonical: string }).canonical = "x@y.example";
    }).toThrow();
    expect(canonicalAddress("Ann@Bücher.Example")).toBe("Ann@xn--bcher-kva.example");
    expect(parseAddress("a..b@example.com")).toEqual(parseAddress("a..b@example.com"));
    expect(parseAddress("a..b@example.com").ok).toBe(false);
  });
});
