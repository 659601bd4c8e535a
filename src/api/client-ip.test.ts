import { describe, expect, test } from "bun:test";
import { clientIp } from "./client-ip.ts";

describe("clientIp", () => {
  test("without a proxy header, the peer is the client", () => {
    expect(clientIp("198.51.100.7", null)).toBe("198.51.100.7");
    expect(clientIp(null, "203.0.113.9")).toBeNull();
  });

  test("X-Forwarded-For from a peer that is not loopback is ignored (anyone can send it)", () => {
    expect(clientIp("198.51.100.7", "203.0.113.9")).toBe("198.51.100.7");
    expect(clientIp("10.0.0.5", "203.0.113.9")).toBe("10.0.0.5");
  });

  test("a proxy on loopback: the rightmost address that is not loopback is the client", () => {
    expect(clientIp("127.0.0.1", "203.0.113.9")).toBe("203.0.113.9");
    expect(clientIp("::1", "1.2.3.4, 203.0.113.9")).toBe("203.0.113.9");
    expect(clientIp("::ffff:127.0.0.1", "2001:db8::1, 127.0.0.1")).toBe("2001:db8::1");
  });

  test("an entry that is no address leaves the peer standing", () => {
    expect(clientIp("127.0.0.1", "203.0.113.9:4711")).toBe("127.0.0.1");
    expect(clientIp("127.0.0.1", "unknown")).toBe("127.0.0.1");
    expect(clientIp("127.0.0.1", " , ")).toBe("127.0.0.1");
  });
});
