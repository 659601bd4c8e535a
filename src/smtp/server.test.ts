import { expect, test } from "bun:test";
import { ipv6Only } from "./server.ts";

const at = (host: string, port: number) => ({ host, port });

test("an IPv6 listener is IPv6-only exactly when an IPv4 address is listed on its port", () => {
  const both = [at("0.0.0.0", 587), at("::", 587)];
  expect(ipv6Only(at("::", 587), both)).toBe(true); // else the second bind fails with EADDRINUSE
  expect(ipv6Only(at("0.0.0.0", 587), both)).toBe(false);
  // alone, "[::]:25" stays dual-stack: IPv4 clients must still reach it
  expect(ipv6Only(at("::", 25), [at("::", 25), at("0.0.0.0", 587)])).toBe(false);
  // an IPv4-mapped address cannot be IPv6-only (the bind would fail with EINVAL); port 0 never clashes
  expect(ipv6Only(at("::ffff:127.0.0.1", 2525), [at("::ffff:127.0.0.1", 2525), at("127.0.0.1", 2525)])).toBe(false);
  expect(ipv6Only(at("::1", 0), [at("::1", 0), at("127.0.0.1", 0)])).toBe(false);
});
