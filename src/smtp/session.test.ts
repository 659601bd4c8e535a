import { expect, test } from "bun:test";
import { defaultIsLoopback } from "./session.ts";

test("loopback for auth_requires_tls is 127.0.0.0/8 (also IPv4-mapped) and ::1, nothing else", () => {
  for (const ip of ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"]) expect(defaultIsLoopback(ip), ip).toBe(true);
  for (const ip of ["128.0.0.1", "10.0.0.1", "::2", "::ffff:10.0.0.1", "fe80::1"]) expect(defaultIsLoopback(ip), ip).toBe(false);
});
