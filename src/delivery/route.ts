/**
 * @module delivery/route — where a recipient domain's mail goes: a static `[[delivery.route]]`, else its MX
 * hosts by preference (random among equal), else its A/AAAA as an implicit MX (RFC 5321 §5.1).
 *
 * Answers (see docs/delivery-routing.md):
 *   null MX "0 ." (RFC 7505)        → permanent 5.1.10
 *   no MX and no A/AAAA (NXDOMAIN)  → permanent 5.1.2 (Bun cannot tell NODATA from NXDOMAIN; both end here)
 *   SERVFAIL, timeout, refused      → temporary (the queue retries; DNS trouble never bounces)
 * An address literal domain ("[192.0.2.1]") goes straight to that address; an IDN is looked up as punycode.
 * DNS answers are cached per domain for `cacheTtlMs`; the order among equal-preference hosts is drawn anew on
 * every call, so load spreads over them even while the answer is cached.
 */
import { isIP } from "node:net";
import { domainToASCII } from "node:url";
import type { RouteConfig, TlsPolicy } from "../config/schema.ts";
import { isLoopback } from "../config/units.ts";
import { DnsError, normalizeHost, type MxRecord, type Resolver } from "./resolver.ts";
import type { Destination, MxHost, RouteResult, Router } from "./types.ts";

export const MX_PORT = 25;

export interface MxRouterOptions {
  resolver: Resolver;
  routes: readonly RouteConfig[];
  /** TLS policy for MX destinations (`delivery.tls`); static routes carry their own. Default "opportunistic". */
  tls?: TlsPolicy;
  /** default 60 s */
  cacheTtlMs?: number;
  /** default Math.random; tests inject it to fix the order among equal preferences */
  random?: () => number;
  /** default Date.now */
  now?: () => number;
}

/** What DNS said about a domain, before shuffling: groups of equal preference, ascending. */
type Resolution =
  | { kind: "mx"; groups: { preference: number; hosts: string[] }[]; key: string }
  | { kind: "permanent"; enhanced: string; reason: string };

const MAX_CACHE = 10_000;

export class MxRouter implements Router {
  private readonly cache = new Map<string, { until: number; value: Promise<Resolution> }>();
  private readonly resolver: Resolver;
  private readonly routes: readonly RouteConfig[];
  private readonly tls: TlsPolicy;
  private readonly ttl: number;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(opts: MxRouterOptions) {
    this.resolver = opts.resolver;
    this.routes = opts.routes;
    this.tls = opts.tls ?? "opportunistic";
    this.ttl = opts.cacheTtlMs ?? 60_000;
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
  }

  async route(domain: string): Promise<RouteResult> {
    const literal = addressLiteral(domain);
    const host = normalizeHost(domain);
    // IDNs are looked up (and matched against routes) in their ASCII form
    const name = literal ?? (domainToASCII(host) || host);
    const route = matchRoute(this.routes, name);
    if (route) return { kind: "ok", destination: staticDestination(route) };
    if (literal) return { kind: "ok", destination: { key: literal, hosts: [{ host: literal, port: MX_PORT, preference: 0 }], tls: this.tls, static: false } };
    let res: Resolution;
    try {
      res = await this.resolve(name);
    } catch (e) {
      return { kind: "temporary", reason: describe(e) };
    }
    if (res.kind === "permanent") return res;
    return { kind: "ok", destination: this.mxDestination(res) };
  }

  private mxDestination(res: Extract<Resolution, { kind: "mx" }>): Destination {
    const hosts: MxHost[] = [];
    for (const group of res.groups) {
      for (const host of shuffle(group.hosts, this.random)) hosts.push({ host, port: MX_PORT, preference: group.preference });
    }
    return { key: res.key, hosts, tls: this.tls, static: false };
  }

  /** Cached, and shared by concurrent callers; temporary failures are not kept (the next attempt asks again). */
  private resolve(name: string): Promise<Resolution> {
    const now = this.now();
    const hit = this.cache.get(name);
    if (hit && hit.until > now) return hit.value;
    if (this.cache.size >= MAX_CACHE) this.evict(now);
    const value = resolveDomain(this.resolver, name);
    this.cache.set(name, { until: now + this.ttl, value });
    value.catch(() => {
      if (this.cache.get(name)?.value === value) this.cache.delete(name);
    });
    return value;
  }

  private evict(now: number): void {
    for (const [k, v] of this.cache) if (v.until <= now) this.cache.delete(k);
    // still full of live entries: drop the oldest (Map keeps insertion order)
    while (this.cache.size >= MAX_CACHE) {
      const first = this.cache.keys().next();
      if (first.done) break;
      this.cache.delete(first.value);
    }
  }
}

/** "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3 address literals) → the address; else undefined. */
export function addressLiteral(domain: string): string | undefined {
  const m = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(domain.trim());
  return m && isIP(m[1]!) ? m[1]!.toLowerCase() : undefined;
}

/**
 * Exact domain beats "*.suffix" (longest suffix first), which beats "*". `domain` is lower-case, and so are the
 * patterns (config/units parseDomainPattern).
 */
export function matchRoute(routes: readonly RouteConfig[], domain: string): RouteConfig | undefined {
  let best: RouteConfig | undefined;
  let bestScore = -1;
  for (const r of routes) {
    const pattern = r.domain;
    let score = -1;
    if (pattern === domain) score = Number.MAX_SAFE_INTEGER;
    else if (pattern === "*") score = 0;
    else if (pattern.startsWith("*.") && domain.endsWith(pattern.slice(1))) score = pattern.length;
    if (score > bestScore) {
      best = r;
      bestScore = score;
    }
  }
  return best;
}

/**
 * Routes that would hand their credentials to a server whose certificate is not checked (`tls` set to
 * "opportunistic" or "required" by hand): a man in the middle could collect the password. Allowed (a smart host
 * with a certificate nobody signed), but `serve` warns about each at start. A loopback host is exempt: nobody
 * sits in the middle of a connection that never leaves the machine.
 */
export function unverifiedCredentialRoutes(routes: readonly RouteConfig[]): RouteConfig[] {
  return routes.filter((r) => r.username !== "" && r.tls !== "verify" && !isLoopbackHost(r.host));
}

function isLoopbackHost(host: string): boolean {
  const h = normalizeHost(host);
  return h === "localhost" || (isIP(h) !== 0 && isLoopback(h));
}

export function staticDestination(r: RouteConfig): Destination {
  const host = normalizeHost(r.host);
  const dest: Destination = {
    key: `route:${host}:${r.port}`,
    hosts: [{ host, port: r.port, preference: 0 }],
    tls: r.tls,
    static: true,
  };
  if (r.tls_ca) dest.tlsCa = r.tls_ca;
  if (r.username) dest.auth = { user: r.username, pass: r.password };
  return dest;
}

async function resolveDomain(resolver: Resolver, domain: string): Promise<Resolution> {
  let mx: MxRecord[];
  try {
    mx = await resolver.resolveMx(domain);
  } catch (e) {
    if (!(e instanceof DnsError) || e.kind !== "notFound") throw e;
    mx = []; // NXDOMAIN or (under Bun) NODATA: the A/AAAA queries below tell
  }
  if (mx.length === 1 && mx[0]!.exchange === "") {
    return { kind: "permanent", enhanced: "5.1.10", reason: `${domain} does not accept mail (null MX, RFC 7505)` };
  }
  const real = mx.filter((r) => r.exchange !== "");
  if (real.length > 0) return mxResolution(real);
  if (await hasAddress(resolver, domain)) return { kind: "mx", groups: [{ preference: 0, hosts: [domain] }], key: domain };
  return { kind: "permanent", enhanced: "5.1.2", reason: `${domain}: no MX, A or AAAA record (domain not found)` };
}

function mxResolution(records: MxRecord[]): Resolution {
  const byPref = new Map<number, Set<string>>();
  for (const r of records) {
    const set = byPref.get(r.preference) ?? new Set<string>();
    set.add(r.exchange);
    byPref.set(r.preference, set);
  }
  const seen = new Set<string>();
  const groups: { preference: number; hosts: string[] }[] = [];
  for (const preference of [...byPref.keys()].sort((a, b) => a - b)) {
    // a host listed at two preferences is tried at the better one only
    const hosts = [...byPref.get(preference)!].filter((h) => !seen.has(h)).sort();
    hosts.forEach((h) => seen.add(h));
    if (hosts.length > 0) groups.push({ preference, hosts });
  }
  return { kind: "mx", groups, key: [...seen].sort().join(",") };
}

/** true when A or AAAA exists; throws DnsError(temporary) only when neither family gave an answer. */
async function hasAddress(resolver: Resolver, domain: string): Promise<boolean> {
  const results = await Promise.allSettled([resolver.resolve4(domain), resolver.resolve6(domain)]);
  if (results.some((r) => r.status === "fulfilled" && r.value.length > 0)) return true;
  const temporary = results.find(
    (r): r is PromiseRejectedResult => r.status === "rejected" && !(r.reason instanceof DnsError && r.reason.kind === "notFound"),
  );
  if (temporary) throw temporary.reason;
  return false;
}

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.min(i, Math.floor(random() * (i + 1)));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function describe(e: unknown): string {
  if (e instanceof DnsError) return `DNS lookup failed: ${e.query}: ${e.code}`;
  return `DNS lookup failed: ${e instanceof Error ? e.message : String(e)}`;
}
