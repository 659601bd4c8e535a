/**
 * @module delivery/resolver — the DNS questions delivery asks (MX, A, AAAA), answered by the system's resolver or
 * by `dns.servers`. Failures come back as DnsError with a kind that says whether waiting could help.
 *
 * Passed in (never imported as a global) so tests point it at test/helpers/dns-server.ts on loopback.
 *
 * Runtime note (checked on Bun 1.4.4): node:dns/promises `Resolver.setServers(["127.0.0.1:5353"])` honours the
 * port. Bun reports a name that exists but has no record of the asked type (NODATA) as ENOTFOUND, the same code
 * as NXDOMAIN (Node says ENODATA), so "notFound" here means "no such record, maybe no such name"; the router
 * copes by always trying A/AAAA after an MX notFound. Bun's resolver rounds `timeout` up to whole seconds.
 */
import { lookup, Resolver as NodeResolver } from "node:dns/promises";
import { isIP } from "node:net";
import type { ListenAddress } from "../config/schema.ts";

export interface MxRecord {
  /** lower-case, no trailing dot; "" for the null MX "." (RFC 7505) */
  exchange: string;
  preference: number;
}

/**
 * notFound: the name or the record does not exist (NXDOMAIN, and under Bun also NODATA) — an answer.
 * temporary: no answer (SERVFAIL, timeout, refused, network) — ask again later, never bounce on it.
 */
export class DnsError extends Error {
  constructor(
    readonly kind: "notFound" | "temporary",
    readonly code: string,
    readonly query: string,
  ) {
    super(`${query}: ${code}`);
    this.name = "DnsError";
  }
}

export interface Resolver {
  /** [] when the name exists without MX records (where the runtime can tell NODATA apart) */
  resolveMx(name: string): Promise<MxRecord[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

export interface ResolverOptions {
  /** per try, ms (Bun rounds up to seconds); default 2000 */
  timeoutMs?: number;
  /** default 2 */
  tries?: number;
}

/** The resolver for delivery: `servers` from `dns.servers`, or the system's resolver when empty. */
export function createResolver(servers: readonly ListenAddress[], opts: ResolverOptions = {}): Resolver {
  const r = new NodeResolver({ timeout: opts.timeoutMs ?? 2000, tries: opts.tries ?? 2 });
  if (servers.length > 0) r.setServers(servers.map(serverString));
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
    throw mapError(e, `${host} lookup`);
  }
}

export function normalizeHost(name: string): string {
  return name.trim().replace(/\.$/, "").toLowerCase();
}

function serverString(s: ListenAddress): string {
  return isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

async function ask<T>(query: string, fn: () => Promise<T[]>): Promise<T[]> {
  try {
    return await fn();
  } catch (e) {
    if (errorCode(e) === "ENODATA") return [];
    throw mapError(e, query);
  }
}

const NOT_FOUND = new Set(["ENOTFOUND", "EBADNAME", "NXDOMAIN"]);

function mapError(e: unknown, query: string): DnsError {
  const code = errorCode(e) ?? "EUNKNOWN";
  return new DnsError(NOT_FOUND.has(code) ? "notFound" : "temporary", code, query);
}

function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

async function settle<T>(p: Promise<T[]>): Promise<{ value: T[]; error?: DnsError }> {
  try {
    return { value: await p };
  } catch (e) {
    return { value: [], error: e instanceof DnsError ? e : mapError(e, "?") };
  }
}
