/**
 * @module delivery/resolver — the DNS questions delivery asks (MX, A, AAAA), answered by the system's resolver or
 * by `dns.servers` (the resolver itself is built in dns/resolver.ts, shared with the domain check). Failures come
 * back as DnsError with a kind that says whether waiting could help.
 *
 * Passed in (never imported as a global) so tests point it at test/helpers/dns-server.ts on loopback.
 * Bun reports NODATA as ENOTFOUND (see dns/resolver.ts), so "notFound" here means "no such record, maybe no such
 * name"; the router copes by always trying A/AAAA after an MX notFound.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { ListenAddress } from "../config/schema.ts";
import { DnsError, dnsError, errorCode, nodeResolver, type ResolverOptions } from "../dns/resolver.ts";

export { DnsError, type ResolverOptions };

export interface MxRecord {
  /** lower-case, no trailing dot; "" for the null MX "." (RFC 7505) */
  exchange: string;
  preference: number;
}

export interface Resolver {
  /** [] when the name exists without MX records (where the runtime can tell NODATA apart) */
  resolveMx(name: string): Promise<MxRecord[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

/** The resolver for delivery: `servers` from `dns.servers`, or the system's resolver when empty. */
export function createResolver(servers: readonly ListenAddress[], opts: ResolverOptions = {}): Resolver {
  const r = nodeResolver(servers, opts);
  return {
    resolveMx: (name) =>
      ask(`${name} MX`, () => r.resolveMx(name)).then((rows) =>
        rows.map((mx) => ({ exchange: normalizeHost(mx.exchange), preference: mx.priority })),
      ),
    resolve4: (name) => ask(`${name} A`, () => r.resolve4(name)),
    resolve6: (name) => ask(`${name} AAAA`, () => r.resolve6(name)),
  };
}

/**
 * Addresses of a host through `resolver` (A first, then AAAA: IPv4 is the path more hosts can reach), falling
 * back to the system's lookup (/etc/hosts: "localhost", a smart host named there) when DNS knows no such name.
 * Meant as SmtpTransport's `lookup`, so MX hosts resolve through `dns.servers` like the MX records did.
 */
export function lookupVia(resolver: Resolver): (host: string) => Promise<string[]> {
  return async (host) => {
    if (isIP(host)) return [host];
    const [v4, v6] = await Promise.all([settle(resolver.resolve4(host)), settle(resolver.resolve6(host))]);
    const found = [...v4.value, ...v6.value];
    if (found.length > 0) return found;
    if (v4.error?.kind === "temporary" && v6.error?.kind === "temporary") throw v4.error;
    return systemLookup(host);
  };
}

/** getaddrinfo, as a program on this machine would resolve the name. */
export async function systemLookup(host: string): Promise<string[]> {
  if (isIP(host)) return [host];
  try {
    const rows = await lookup(host, { all: true });
    return rows.map((r) => r.address);
  } catch (e) {
    throw dnsError(e, `${host} lookup`);
  }
}

export function normalizeHost(name: string): string {
  return name.trim().replace(/\.$/, "").toLowerCase();
}

async function ask<T>(query: string, fn: () => Promise<T[]>): Promise<T[]> {
  try {
    return await fn();
  } catch (e) {
    if (errorCode(e) === "ENODATA") return [];
    throw dnsError(e, query);
  }
}

async function settle<T>(p: Promise<T[]>): Promise<{ value: T[]; error?: DnsError }> {
  try {
    return { value: await p };
  } catch (e) {
    return { value: [], error: dnsError(e, "?") };
  }
}
