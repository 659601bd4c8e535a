import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { RouteConfig } from "../config/schema.ts";
import { startDnsServer, type FakeDns } from "../../test/helpers/dns-server.ts";
import { createResolver, lookupVia, type Resolver } from "./resolver.ts";
import { matchRoute, MxRouter, unverifiedCredentialRoutes } from "./route.ts";
import type { RouteResult } from "./types.ts";

let dns: FakeDns;
let resolver: Resolver;

beforeAll(async () => {
  dns = await startDnsServer({
    "ordered.test": {
      mx: [
        { preference: 20, exchange: "mx-b.ordered.test" },
        { preference: 10, exchange: "mx-a.ordered.test" },
        { preference: 30, exchange: "mx-c.ordered.test" },
      ],
    },
    "equal.test": {
      mx: [
        { preference: 10, exchange: "one.equal.test" },
        { preference: 10, exchange: "two.equal.test" },
        { preference: 10, exchange: "three.equal.test" },
        { preference: 20, exchange: "backup.equal.test" },
      ],
    },
    "shared-a.test": { mx: [{ preference: 5, exchange: "MX2.Provider.test." }, { preference: 10, exchange: "mx1.provider.test" }] },
    "shared-b.test": { mx: [{ preference: 10, exchange: "mx1.provider.test" }, { preference: 10, exchange: "mx2.provider.test" }] },
    "aonly.test": { a: ["127.0.0.9"] },
    "aaaaonly.test": { aaaa: ["::1"] },
    "empty.test": {},
    "null.test": { mx: [{ preference: 0, exchange: "." }] },
    "broken.test": { servfail: true },
    "mx1.provider.test": { a: ["127.0.0.2"], aaaa: ["::1"] },
    "silent.test": { silent: true },
    "xn--bcher-kva.test": { mx: [{ preference: 10, exchange: "mx.xn--bcher-kva.test" }] },
  });
  resolver = createResolver([{ host: "127.0.0.1", port: dns.port }], { timeoutMs: 300, tries: 1 });
});

afterAll(async () => {
  await dns.stop();
});

/** Counts the questions the router asks (Bun's resolver has its own cache, so the DNS server's log can't tell). */
function counting(inner: Resolver) {
  const asked: string[] = [];
  const wrapped: Resolver = {
    resolveMx: (n) => (asked.push(`${n} MX`), inner.resolveMx(n)),
    resolve4: (n) => (asked.push(`${n} A`), inner.resolve4(n)),
    resolve6: (n) => (asked.push(`${n} AAAA`), inner.resolve6(n)),
  };
  return { asked, resolver: wrapped };
}

function router(opts: Partial<ConstructorParameters<typeof MxRouter>[0]> = {}): MxRouter {
  return new MxRouter({ resolver, routes: [], ...opts });
}

function ok(r: RouteResult) {
  if (r.kind !== "ok") throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r.destination;
}

const route = (domain: string, host: string, extra: Partial<RouteConfig> = {}): RouteConfig => ({
  domain,
  host,
  port: 587,
  tls: "required",
  tls_ca: "",
  username: "",
  password: "",
  ...extra,
});

describe("static routes", () => {
  const routes = [
    route("*", "catchall.test"),
    route("*.example.com", "sub.test"),
    route("*.deep.example.com", "deep.test"),
    route("example.com", "exact.test"),
  ];
  test.each([
    ["example.com", "exact.test"],
    ["a.example.com", "sub.test"],
    ["a.b.example.com", "sub.test"],
    ["x.deep.example.com", "deep.test"],
    ["deep.example.com", "sub.test"],
    ["notexample.com", "catchall.test"],
    ["other.org", "catchall.test"],
  ])("%s goes to %s (the most specific pattern wins)", (domain, host) => {
    expect(matchRoute(routes, domain)?.host).toBe(host);
  });

  test("a domain no pattern matches has no static route", () => {
    expect(matchRoute([route("*.example.com", "sub.test")], "example.com")).toBeUndefined();
  });

  test("a static route gives its host, port, TLS policy, AUTH and a route: key, without asking DNS", async () => {
    const c = counting(resolver);
    const r = router({ resolver: c.resolver, routes: [route("*", "Smarthost.Test", { username: "u", password: "p", port: 2525 })] });
    expect(ok(await r.route("anything.example"))).toEqual({
      key: "route:smarthost.test:2525",
      hosts: [{ host: "smarthost.test", port: 2525, preference: 0 }],
      tls: "required",
      auth: { user: "u", pass: "p" },
      static: true,
    });
    expect(c.asked).toEqual([]);
  });

  test("a recipient domain in any case, with a trailing dot, or as an IDN matches the route written in ASCII", async () => {
    const r = router({ routes: [route("x.test", "exact.test"), route("*.xn--bcher-kva.test", "idn.test")] });
    expect(ok(await r.route("X.Test.")).hosts[0]!.host).toBe("exact.test");
    expect(ok(await r.route("Shop.B\u00fccher.test")).hosts[0]!.host).toBe("idn.test");
  });

  test("a route that verifies carries its CA file to the transport", async () => {
    const d = ok(await router({ routes: [route("x.test", "relay.test", { tls: "verify", tls_ca: "/etc/outpost/ca.pem", username: "u", password: "p" })] }).route("x.test"));
    expect(d).toMatchObject({ tls: "verify", tlsCa: "/etc/outpost/ca.pem", auth: { user: "u", pass: "p" } });
  });

  test("routes whose credentials would go over an unchecked certificate are the ones not verifying, off this machine", () => {
    const creds = { username: "u", password: "p" };
    const routes = [
      route("a.test", "relay.test", { ...creds, tls: "opportunistic" }),
      route("b.test", "relay.test", { ...creds, tls: "required" }),
      route("c.test", "relay.test", { ...creds, tls: "verify" }),
      route("d.test", "127.0.0.1", { ...creds, tls: "opportunistic" }),
      route("e.test", "localhost", { ...creds, tls: "required" }),
      route("f.test", "::1", { ...creds, tls: "required" }),
      route("g.test", "relay.test", { tls: "opportunistic" }),
    ];
    expect(unverifiedCredentialRoutes(routes).map((r) => r.domain)).toEqual(["a.test", "b.test"]);
  });

  test("a static route without a username carries no AUTH", async () => {
    const d = ok(await router({ routes: [route("x.test", "relay.test", { tls: "opportunistic" })] }).route("x.test"));
    expect(d.auth).toBeUndefined();
    expect(d.tls).toBe("opportunistic");
  });
});

describe("MX routing", () => {
  test("orders MX hosts by preference, port 25, MX destination with the router's TLS policy", async () => {
    const d = ok(await router({ tls: "required" }).route("ordered.test"));
    expect(d.hosts).toEqual([
      { host: "mx-a.ordered.test", port: 25, preference: 10 },
      { host: "mx-b.ordered.test", port: 25, preference: 20 },
      { host: "mx-c.ordered.test", port: 25, preference: 30 },
    ]);
    expect(d.static).toBe(false);
    expect(d.tls).toBe("required");
    expect(d.key).toBe("mx-a.ordered.test,mx-b.ordered.test,mx-c.ordered.test");
  });

  test("shuffles hosts of equal preference with the injected random, keeping the backup last", async () => {
    const low = ok(await router({ random: () => 0 }).route("equal.test")).hosts.map((h) => h.host);
    const high = ok(await router({ random: () => 0.999 }).route("equal.test")).hosts.map((h) => h.host);
    expect(low.at(-1)).toBe("backup.equal.test");
    expect(high.at(-1)).toBe("backup.equal.test");
    expect(new Set(low.slice(0, 3))).toEqual(new Set(["one.equal.test", "two.equal.test", "three.equal.test"]));
    expect(low.slice(0, 3)).not.toEqual(high.slice(0, 3));
  });

  test("draws the order among equals anew on each call while the DNS answer is cached", async () => {
    let n = 0;
    const seq = [0, 0, 0.999, 0.999];
    const c = counting(resolver);
    const r = router({ resolver: c.resolver, random: () => seq[n++ % seq.length]! });
    const first = ok(await r.route("equal.test")).hosts.map((h) => h.host);
    const second = ok(await r.route("equal.test")).hosts.map((h) => h.host);
    expect(c.asked).toEqual(["equal.test MX"]);
    expect(second).not.toEqual(first);
  });

  test("domains on the same MX hosts share one key (one throttle budget), names normalised", async () => {
    const r = router();
    const a = ok(await r.route("shared-a.test"));
    const b = ok(await r.route("SHARED-B.test"));
    expect(a.key).toBe("mx1.provider.test,mx2.provider.test");
    expect(b.key).toBe(a.key);
    expect(a.hosts[0]!.host).toBe("mx2.provider.test");
  });

  test("a host listed at two preferences is tried at the better one only", async () => {
    dns.zones["dup.test"] = {
      mx: [
        { preference: 20, exchange: "a.dup.test" },
        { preference: 10, exchange: "a.dup.test" },
        { preference: 20, exchange: "b.dup.test" },
      ],
    };
    const d = ok(await router().route("dup.test"));
    expect(d.hosts.map((h) => [h.host, h.preference])).toEqual([["a.dup.test", 10], ["b.dup.test", 20]]);
    expect(d.key).toBe("a.dup.test,b.dup.test");
  });

  test("a null MX next to real MX records (RFC 7505 forbids it) is ignored and the real ones are used", async () => {
    dns.zones["mixednull.test"] = { mx: [{ preference: 0, exchange: "." }, { preference: 10, exchange: "mx.mixednull.test" }] };
    expect(ok(await router().route("mixednull.test")).hosts).toEqual([{ host: "mx.mixednull.test", port: 25, preference: 10 }]);
  });

  test("a domain without MX uses its A record as an implicit MX (RFC 5321 §5.1)", async () => {
    const d = ok(await router().route("aonly.test"));
    expect(d.hosts).toEqual([{ host: "aonly.test", port: 25, preference: 0 }]);
    expect(d.key).toBe("aonly.test");
  });

  test("a domain without MX uses its AAAA record when it has no A", async () => {
    expect(ok(await router().route("aaaaonly.test")).hosts[0]!.host).toBe("aaaaonly.test");
  });

  test("a null MX bounces now with 5.1.10", async () => {
    const r = await router().route("null.test");
    expect(r).toMatchObject({ kind: "permanent", enhanced: "5.1.10" });
  });

  test("a domain that does not exist bounces with 5.1.2", async () => {
    expect(await router().route("nowhere.test")).toMatchObject({ kind: "permanent", enhanced: "5.1.2" });
  });

  test("a domain with no MX, A or AAAA bounces with 5.1.2", async () => {
    expect(await router().route("empty.test")).toMatchObject({ kind: "permanent", enhanced: "5.1.2" });
  });

  test("SERVFAIL is temporary, never a bounce", async () => {
    const r = await router().route("broken.test");
    expect(r.kind).toBe("temporary");
    if (r.kind === "temporary") expect(r.reason).toContain("ESERVFAIL");
  });

  test("a DNS timeout is temporary", async () => {
    expect((await router().route("silent.test")).kind).toBe("temporary");
  });

  test("an unreachable DNS server is temporary", async () => {
    const dead = createResolver([{ host: "127.0.0.1", port: 9 }], { timeoutMs: 300, tries: 1 });
    expect((await new MxRouter({ resolver: dead, routes: [] }).route("ordered.test")).kind).toBe("temporary");
  });

  test("caches answers for the TTL and asks again after it", async () => {
    let now = 1_000_000;
    const c = counting(resolver);
    const r = router({ resolver: c.resolver, now: () => now, cacheTtlMs: 1000 });
    await r.route("ordered.test");
    now += 999;
    await r.route("ordered.test");
    expect(c.asked).toEqual(["ordered.test MX"]);
    now += 2;
    await r.route("ordered.test");
    expect(c.asked).toEqual(["ordered.test MX", "ordered.test MX"]);
  });

  test("concurrent lookups of one domain share one DNS query", async () => {
    const c = counting(resolver);
    const r = router({ resolver: c.resolver });
    const all = await Promise.all([r.route("shared-b.test"), r.route("shared-b.test"), r.route("shared-b.test")]);
    expect(all.map((x) => x.kind)).toEqual(["ok", "ok", "ok"]);
    expect(c.asked).toEqual(["shared-b.test MX"]);
  });

  test("a temporary failure is not cached: the next call asks again and can succeed", async () => {
    dns.zones["flaky.test"] = { servfail: true };
    const r = router();
    expect((await r.route("flaky.test")).kind).toBe("temporary");
    dns.zones["flaky.test"] = { mx: [{ preference: 1, exchange: "mx.flaky.test" }] };
    expect(ok(await r.route("flaky.test")).key).toBe("mx.flaky.test");
  });
});

describe("unusual domains", () => {
  test("an IDN is looked up in its ASCII (punycode) form", async () => {
    expect(ok(await router().route("b\u00fccher.test")).key).toBe("mx.xn--bcher-kva.test");
  });

  test("an address literal goes straight to that address on port 25", async () => {
    const c = counting(resolver);
    expect(ok(await router({ resolver: c.resolver }).route("[127.0.0.7]")).hosts).toEqual([{ host: "127.0.0.7", port: 25, preference: 0 }]);
    expect(ok(await router({ resolver: c.resolver }).route("[IPv6:::1]")).hosts[0]!.host).toBe("::1");
    expect(c.asked).toEqual([]);
  });

  test("a bracketed non-address is treated as a name and not found", async () => {
    expect(await router().route("[not-an-ip]")).toMatchObject({ kind: "permanent", enhanced: "5.1.2" });
  });
});

describe("resolver", () => {
  test("honours a custom server with a port (the answers can only come from the fake DNS)", async () => {
    await resolver.resolveMx("ordered.test"); // so this test does not lean on the ones before it
    expect(dns.queries).toContain("ordered.test MX");
    expect(await resolver.resolve4("mx1.provider.test")).toEqual(["127.0.0.2"]);
    expect(await resolver.resolveMx("null.test")).toEqual([{ exchange: "", preference: 0 }]);
  });

  test("accepts a DNS server given by an IPv6 address", async () => {
    const v6 = await startDnsServer({ "six.test": { a: ["127.0.0.6"] } }, "::1").catch(() => null);
    if (!v6) return; // no IPv6 loopback here
    try {
      const r = createResolver([{ host: "::1", port: v6.port }], { timeoutMs: 500, tries: 1 });
      expect(await r.resolve4("six.test")).toEqual(["127.0.0.6"]);
    } finally {
      await v6.stop();
    }
  });

  test("lookupVia gives A then AAAA addresses from the configured servers", async () => {
    expect(await lookupVia(resolver)("mx1.provider.test")).toEqual(["127.0.0.2", "::1"]);
  });

  test("lookupVia falls back to the system's lookup for names DNS does not know (/etc/hosts)", async () => {
    expect(await lookupVia(resolver)("localhost")).not.toHaveLength(0);
  });

  test("lookupVia passes IP literals through", async () => {
    expect(await lookupVia(resolver)("127.0.0.5")).toEqual(["127.0.0.5"]);
  });
});
