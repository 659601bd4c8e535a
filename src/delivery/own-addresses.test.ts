import { describe, expect, test } from "bun:test";
import { ownAddresses } from "./own-addresses.ts";

/** A machine with one public IPv4 and one IPv6 address besides loopback. */
const interfaces = () => ["127.0.0.1", "::1", "192.0.2.10", "2001:db8::10", "fe80::1"];

describe("ownAddresses", () => {
  test("a listener bound to one address owns that address on its port only", () => {
    const own = ownAddresses([{ ip: "127.0.0.1", port: 2525 }], interfaces);
    expect(own("127.0.0.1", 2525)).toBe(true);
    expect(own("::ffff:127.0.0.1", 2525)).toBe(true);
    expect(own("127.0.0.1", 25)).toBe(false);
    expect(own("127.0.0.2", 2525)).toBe(false);
    expect(own("192.0.2.10", 2525)).toBe(false);
  });

  test("an IPv6 listener matches however the address is written", () => {
    const own = ownAddresses([{ ip: "2001:db8::10", port: 25 }], interfaces);
    expect(own("2001:0db8:0:0:0:0:0:10", 25)).toBe(true);
    expect(own("2001:db8::11", 25)).toBe(false);
  });

  test("a wildcard listener owns every interface address, all of 127/8 and ::1, on its port", () => {
    for (const wildcard of ["0.0.0.0", "::"]) {
      const own = ownAddresses([{ ip: wildcard, port: 25 }], interfaces);
      for (const ip of ["192.0.2.10", "2001:db8::10", "127.0.0.1", "127.8.9.10", "::1", "::ffff:192.0.2.10"]) {
        expect(own(ip, 25), `${wildcard} owns ${ip}`).toBe(true);
      }
      expect(own("192.0.2.11", 25)).toBe(false);
      expect(own("192.0.2.10", 587)).toBe(false);
    }
  });

  test("interfaces are read at each check, so an address added later is ours too", () => {
    const list = ["127.0.0.1"];
    const own = ownAddresses([{ ip: "0.0.0.0", port: 25 }], () => list);
    expect(own("198.51.100.7", 25)).toBe(false);
    list.push("198.51.100.7");
    expect(own("198.51.100.7", 25)).toBe(true);
  });

  test("no listeners: nothing is ours", () => {
    expect(ownAddresses([], interfaces)("127.0.0.1", 25)).toBe(false);
  });

  test("the machine's real interfaces are ours behind a wildcard (the default reader)", () => {
    const own = ownAddresses([{ ip: "0.0.0.0", port: 25 }]);
    expect(own("127.0.0.1", 25)).toBe(true);
    expect(own("203.0.113.1", 25)).toBe(false);
  });
});
