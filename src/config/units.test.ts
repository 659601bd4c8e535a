import { describe, expect, test } from "bun:test";
import {
  cidrContains, clientKey, isHostname, parseCidr, parseDnsServer, parseDomainPattern, parseDuration,
  parseHttpUrl, parseListen, parseRate, parseSize,
} from "./units.ts";

describe("parseDuration", () => {
  test.each([
    ["250ms", 250],
    ["30s", 30_000],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["5d", 432_000_000],
    ["0s", 0],
    ["1h30m", 5_400_000],
  ])("%s", (text, ms) => expect(parseDuration(text)).toBe(ms));

  test.each(["", "30", "5 m", "-5m", "1.5h", "5w", "m", "5M", "99999999999999999d"])("rejects %p", (text) => {
    expect(() => parseDuration(text)).toThrow(/duration/);
  });
});

describe("parseSize", () => {
  test.each([
    ["512KB", 512 * 1024],
    ["25MB", 25 * 1024 * 1024],
    ["1GB", 1024 ** 3],
    ["100B", 100],
    ["25mb", 25 * 1024 * 1024],
    ["1048576", 1_048_576],
    [1_048_576, 1_048_576],
  ] as const)("%p", (value, bytes) => expect(parseSize(value)).toBe(bytes));

  test.each(["", "MB", "25XB", "1.5MB", "-1", "25 MBs"])("rejects %p", (text) => {
    expect(() => parseSize(text)).toThrow(/expected a size like "512KB"/);
  });

  test.each([-1, 1.5, Number.NaN])("rejects the number %p", (value) => {
    expect(() => parseSize(value)).toThrow(/size/);
  });
});

describe("parseRate", () => {
  test.each([
    ["10/s", { count: 10, perMs: 1000 }],
    ["600/min", { count: 600, perMs: 60_000 }],
    ["5000/h", { count: 5000, perMs: 3_600_000 }],
    ["100/day", { count: 100, perMs: 86_400_000 }],
  ])("%s", (text, rate) => expect(parseRate(text)).toEqual(rate));

  test.each(["", "10", "10/", "/s", "0/s", "10/fortnight", "1.5/s", "ten/s"])("rejects %p", (text) => {
    expect(() => parseRate(text)).toThrow(/expected a rate like/);
  });
});

describe("parseListen", () => {
  test.each([
    ["127.0.0.1:2525", { host: "127.0.0.1", port: 2525 }],
    ["0.0.0.0:25", { host: "0.0.0.0", port: 25 }],
    ["[::1]:2525", { host: "::1", port: 2525 }],
    ["[::]:587", { host: "::", port: 587 }],
    ["localhost:8025", { host: "localhost", port: 8025 }],
    ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }],
  ])("%s", (text, address) => expect(parseListen(text)).toEqual(address));

  test.each(["", "127.0.0.1", ":25", "::1:25", "[127.0.0.1]:25", "127.0.0.1:65536", "127.0.0.1:port", "bad_host:25", "[::1]", "1.2.3:25", "256.0.0.1:25"])(
    "rejects %p",
    (text) => expect(() => parseListen(text)).toThrow(/expected an address like/),
  );
});

describe("parseDnsServer", () => {
  test("defaults to port 53", () => expect(parseDnsServer("192.0.2.53")).toEqual({ host: "192.0.2.53", port: 53 }));
  test("takes a port", () => expect(parseDnsServer("[::1]:5353")).toEqual({ host: "::1", port: 5353 }));
  test("rejects a host name", () => expect(() => parseDnsServer("dns.example:53")).toThrow(/IP address/));
});

describe("parseCidr", () => {
  test.each([
    ["10.0.0.0/8", { family: 4, address: "10.0.0.0", prefix: 8 }],
    ["10.1.2.3/8", { family: 4, address: "10.0.0.0", prefix: 8 }],
    ["127.0.0.1", { family: 4, address: "127.0.0.1", prefix: 32 }],
    ["0.0.0.0/0", { family: 4, address: "0.0.0.0", prefix: 0 }],
    ["::1/128", { family: 6, address: "::1", prefix: 128 }],
    ["::1", { family: 6, address: "::1", prefix: 128 }],
    ["2001:DB8:0:0:1::/32", { family: 6, address: "2001:db8::", prefix: 32 }],
    ["fe80::1:2/64", { family: 6, address: "fe80::", prefix: 64 }],
    ["2001:db8:0:1:0:0:0:1", { family: 6, address: "2001:db8:0:1::1", prefix: 128 }],
  ])("%s", (text, cidr) => expect(parseCidr(text)).toEqual(cidr as ReturnType<typeof parseCidr>));

  test.each(["", "10.0.0.0/33", "::/129", "fe80::1%eth0", "10.0.0/8", "10.0.0.0/", "10.0.0.0/8/8", "example.com/24", "10.0.0.0/-1"])(
    "rejects %p",
    (text) => expect(() => parseCidr(text)).toThrow(/expected an address or network/),
  );
});

describe("clientKey", () => {
  test("an IPv4 client is its address, also when written IPv4-mapped", () => {
    expect(clientKey("192.0.2.7")).toBe("192.0.2.7");
    expect(clientKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(clientKey("::FFFF:c000:207")).toBe("192.0.2.7");
  });
  test("an IPv6 client is its /64, however the address is written", () => {
    expect(clientKey("2001:db8:1:2::a")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:DB8:1:2:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:0db8:0001:0002:0:0:0:1")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8:1:3::a")).toBe("2001:db8:1:3::/64");
    expect(clientKey("::1")).toBe("::/64");
    expect(clientKey("fe80::1%eth0")).toBe("fe80::/64");
  });
  test("anything else is kept as given", () => {
    expect(clientKey("")).toBe("");
    expect(clientKey("not-an-ip")).toBe("not-an-ip");
  });
});

describe("cidrContains", () => {
  const v4 = parseCidr("10.0.0.0/8");
  const loopback6 = parseCidr("::1/128");
  test("IPv4 inside and outside", () => {
    expect(cidrContains(v4, "10.255.0.1")).toBe(true);
    expect(cidrContains(v4, "11.0.0.1")).toBe(false);
  });
  test("IPv4-mapped IPv6 matches an IPv4 network", () => {
    expect(cidrContains(parseCidr("127.0.0.1"), "::ffff:127.0.0.1")).toBe(true);
    expect(cidrContains(v4, "::ffff:10.1.2.3")).toBe(true);
    expect(cidrContains(v4, "::ffff:192.0.2.1")).toBe(false);
  });
  test("IPv4 matches a mapped IPv6 network", () => {
    expect(cidrContains(parseCidr("::ffff:10.0.0.0/104"), "10.9.9.9")).toBe(true);
  });
  test("IPv6, with and without a zone", () => {
    expect(cidrContains(loopback6, "::1")).toBe(true);
    expect(cidrContains(loopback6, "0:0:0:0:0:0:0:1")).toBe(true);
    expect(cidrContains(parseCidr("fe80::/10"), "fe80::1%eth0")).toBe(true);
    expect(cidrContains(loopback6, "::2")).toBe(false);
  });
  test("a plain IPv6 address is not in an IPv4 network", () => expect(cidrContains(v4, "2001:db8::1")).toBe(false));
  test("/0 holds everything of its family", () => expect(cidrContains(parseCidr("0.0.0.0/0"), "203.0.113.7")).toBe(true));
  test("garbage is not contained", () => expect(cidrContains(v4, "not an ip")).toBe(false));
  test("IPv4 networks match at their exact boundaries, also in the upper half of the address space", () => {
    const upper = parseCidr("203.0.113.128/25");
    expect(cidrContains(upper, "203.0.113.128")).toBe(true);
    expect(cidrContains(upper, "203.0.113.255")).toBe(true);
    expect(cidrContains(upper, "203.0.113.127")).toBe(false);
    expect(cidrContains(parseCidr("128.0.0.0/1"), "255.255.255.255")).toBe(true);
    expect(cidrContains(parseCidr("128.0.0.0/1"), "127.255.255.255")).toBe(false);
    expect(cidrContains(parseCidr("192.0.2.7/32"), "192.0.2.7")).toBe(true);
    expect(cidrContains(parseCidr("192.0.2.7/32"), "192.0.2.6")).toBe(false);
    expect(cidrContains(parseCidr("192.0.2.6/31"), "192.0.2.7")).toBe(true);
  });
  test("what isIPv4 refuses is in no IPv4 network (leading zeros, out-of-range octets, too few or many parts)", () => {
    for (const bad of ["10.0.0.01", "10.0.0.256", "10.0.0", "10.0.0.1.2", "10..0.1", "10.0.0.", ".10.0.0.1", "10.0.0.1 "]) {
      expect(cidrContains(parseCidr("0.0.0.0/0"), bad)).toBe(false);
      expect(clientKey(bad)).toBe(bad);
    }
  });
});

describe("names and URLs", () => {
  test("host names", () => {
    expect(isHostname("mail.example.com")).toBe(true);
    expect(isHostname("localhost")).toBe(true);
    expect(isHostname("-bad.example")).toBe(false);
    expect(isHostname("_spf.example.com")).toBe(false);
    expect(isHostname("_spf.example.com", true)).toBe(true);
    expect(isHostname("a..b")).toBe(false);
    expect(isHostname("999.1.1.1")).toBe(false);
  });
  test("domain patterns", () => {
    expect(parseDomainPattern("*")).toBe("*");
    expect(parseDomainPattern("*.Protection.Outlook.com")).toBe("*.protection.outlook.com");
    expect(parseDomainPattern("gmail.com")).toBe("gmail.com");
    expect(() => parseDomainPattern("a.*.com")).toThrow(/pattern/);
    expect(() => parseDomainPattern("*example.com")).toThrow(/pattern/);
  });
  test("http URLs lose their trailing slash", () => {
    expect(parseHttpUrl("https://mail.example.com/")).toBe("https://mail.example.com");
    expect(parseHttpUrl("http://127.0.0.1:8025/t/")).toBe("http://127.0.0.1:8025/t");
    expect(() => parseHttpUrl("ftp://example.com")).toThrow(/http\(s\) URL/);
    expect(() => parseHttpUrl("example.com")).toThrow(/http\(s\) URL/);
  });
});
