import { describe, expect, test } from "bun:test";
import { customerRecord, includeRecords, MAX_LINKS, probeAddresses, SpfRecordError } from "./record.ts";

describe("includeRecords", () => {
  test("a few addresses and networks make one record at the include domain", () => {
    const out = includeRecords("_senderspf.example.com", ["203.0.113.7", "198.51.100.16/28", "2001:db8::7", "2001:db8:1::/48"]);
    expect(out.records).toEqual([
      { name: "_senderspf.example.com", value: "v=spf1 ip4:203.0.113.7 ip4:198.51.100.16/28 ip6:2001:db8::7 ip6:2001:db8:1::/48 ~all" },
    ]);
    expect(out.customer).toBe("v=spf1 include:_senderspf.example.com a mx ~all");
    expect(out.lookups).toBe(1);
  });

  test("addresses that do not fit one 255-octet string are chained through _spfN includes, each record within 255 octets", () => {
    const ips = Array.from({ length: 40 }, (_, i) => `203.0.113.${i + 1}`);
    const out = includeRecords("_senderspf.example.com", ips);
    expect(out.records.length).toBeGreaterThan(1);
    expect(out.records.map((r) => r.name)).toEqual(out.records.map((_, i) => (i === 0 ? "_senderspf.example.com" : `_spf${i + 1}._senderspf.example.com`)));
    for (const [i, r] of out.records.entries()) {
      expect(Buffer.byteLength(r.value)).toBeLessThanOrEqual(255);
      const next = out.records[i + 1];
      expect(r.value.includes(`include:${next?.name}`)).toBe(next !== undefined);
      expect(r.value.startsWith("v=spf1 ") && r.value.endsWith(" ~all")).toBe(true);
    }
    // every address once, in order
    const listed = out.records.flatMap((r) => r.value.split(" ").filter((t) => t.startsWith("ip4:")).map((t) => t.slice(4)));
    expect(listed).toEqual(ips);
    expect(out.lookups).toBe(out.records.length);
  });

  test("more addresses than a customer's 10 DNS lookups can reach are refused, with what to do", () => {
    const ips = Array.from({ length: 250 }, (_, i) => `2001:db8:${i.toString(16)}::${(i + 1).toString(16)}`);
    expect(() => includeRecords("_senderspf.example.com", ips)).toThrow(SpfRecordError);
    expect(() => includeRecords("_senderspf.example.com", ips)).toThrow(new RegExp(`more than the ${MAX_LINKS} DNS lookups.*one network`));
  });

  test("the customer's line includes the include domain before a and mx", () => {
    expect(customerRecord("spf.example.net")).toBe("v=spf1 include:spf.example.net a mx ~all");
  });
});

test("a network is probed at its first and last address, a single address as itself", () => {
  expect(probeAddresses("203.0.113.7")).toEqual(["203.0.113.7"]);
  expect(probeAddresses("198.51.100.16/28")).toEqual(["198.51.100.16", "198.51.100.31"]);
  expect(probeAddresses("2001:db8:1::/48")).toEqual(["2001:db8:1::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff"]);
});
