import { expect, test } from "bun:test";
import { EventEmitter } from "node:events";
import type net from "node:net";
import type { SMTPServerAuthentication, SMTPServerSession } from "smtp-server";
import { parseConfig } from "../config/load.ts";
import { silentLogger } from "../observe/log.ts";
import { defaultIsLoopback, SessionHooks } from "./session.ts";

test("loopback for auth_requires_tls is 127.0.0.0/8 (also IPv4-mapped) and ::1, nothing else", () => {
  for (const ip of ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"]) expect(defaultIsLoopback(ip), ip).toBe(true);
  for (const ip of ["128.0.0.1", "10.0.0.1", "::2", "::ffff:10.0.0.1", "fe80::1"]) expect(defaultIsLoopback(ip), ip).toBe(false);
});


function hooks(toml: string): SessionHooks {
  const config = parseConfig(`hostname = "outpost.test"\n[smtp]\n${toml}`, { env: {} });
  return new SessionHooks({
    smtp: config.smtp,
    hostname: "outpost.test",
    relay: { bounceDomain: "", isValidBounceToken: () => false },
    bounceMaxSize: 1024,
    credentials: { check: async () => null },
    log: silentLogger,
  });
}

/** What admitSocket uses of a TCP socket, and what it wrote before closing it. */
function fakeSocket(remoteAddress: string, remotePort: number) {
  const s = Object.assign(new EventEmitter(), { remoteAddress, remotePort, said: "", closed: false });
  return Object.assign(s, {
    end: (text: string) => ((s.said = text), (s.closed = true)),
    destroy: () => (s.closed = true),
  });
}
const admit = (h: SessionHooks, ip: string, port: number) => h.admitSocket(fakeSocket(ip, port) as unknown as net.Socket, false);

test("two IPv6 clients in one /64 share max_connections_per_ip; another /64 and IPv4-mapped clients count apart", () => {
  const h = hooks("max_connections_per_ip = 2");
  expect(admit(h, "2001:db8:1:2::a", 1000)).toBe(true);
  expect(admit(h, "2001:db8:1:2:ffff::b", 1001)).toBe(true);
  const third = fakeSocket("2001:db8:1:2::c", 1002);
  expect(h.admitSocket(third as unknown as net.Socket, false)).toBe(false);
  expect(third.said).toBe("421 4.7.0 outpost.test too many connections from your address, try again later\r\n");
  expect(admit(h, "2001:db8:1:3::a", 1003)).toBe(true);
  expect(admit(h, "::ffff:192.0.2.7", 1004)).toBe(true);
  expect(admit(h, "192.0.2.7", 1005)).toBe(true);
  expect(admit(h, "::ffff:192.0.2.7", 1006)).toBe(false); // the same IPv4 client, however it is written
});

test("max_connections refuses any client once that many are open, with its own 421", () => {
  const h = hooks("max_connections = 2");
  expect(admit(h, "192.0.2.1", 1000)).toBe(true);
  expect(admit(h, "192.0.2.2", 1000)).toBe(true);
  const third = fakeSocket("192.0.2.3", 1000);
  expect(h.admitSocket(third as unknown as net.Socket, false)).toBe(false);
  expect(third.said).toBe("421 4.7.0 outpost.test too many connections, try again later\r\n");
});

test("AUTH failures from one /64 add up: its other addresses are blocked too", async () => {
  const h = hooks("auth_failures_before_block = 3\nauth_requires_tls = false");
  const auth = { method: "PLAIN", username: "alice", password: "guess" } as SMTPServerAuthentication;
  const fail = (ip: string, i: number) =>
    new Promise<string>((resolve) =>
      h.onAuth(auth, { id: `s${i}`, remoteAddress: ip, secure: false } as SMTPServerSession, (err) => resolve(err?.message ?? "ok")),
    );
  expect(await fail("2001:db8:5:6::1", 1)).toStartWith("5.7.8");
  expect(await fail("2001:db8:5:6::2", 2)).toStartWith("5.7.8");
  expect(await fail("2001:db8:5:6:1::3", 3)).toStartWith("4.7.0 outpost.test too many failed authentications");
  const refused = await new Promise<Error | null | undefined>((resolve) =>
    h.onConnect({ id: "s4", remoteAddress: "2001:db8:5:6::99" } as SMTPServerSession, resolve),
  );
  expect(refused?.message).toStartWith("4.7.0 outpost.test too many failed authentications");
  const neighbour = await new Promise<Error | null | undefined>((resolve) =>
    h.onConnect({ id: "s5", remoteAddress: "2001:db8:5:7::1" } as SMTPServerSession, resolve),
  );
  expect(neighbour).toBeUndefined();
});
