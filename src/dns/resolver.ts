/**
 * @module dns/resolver — the node:dns resolver outpost asks through: `dns.servers` (host:port) when set, else the
 * system's, with a timeout and a number of tries; failures as DnsError with a kind that says whether waiting
 * could help. Shared by delivery (MX, A, AAAA) and the domain check (spf/).
 *
 * Runtime notes (checked on Bun 1.4.4): `Resolver.setServers(["127.0.0.1:5353"])` honours the port. Bun reports a
 * name that exists but has no record of the asked type (NODATA) as ENOTFOUND, the same code as NXDOMAIN (Node says
 * ENODATA). Bun's resolver rounds `timeout` up to whole seconds. TXT is asked elsewhere (dns/txt.ts).
 */
import { Resolver as NodeResolver } from "node:dns/promises";
import { isIP } from "node:net";
import type { ListenAddress } from "../config/schema.ts";

/**
 * notFound: the name or the record does not exist (NXDOMAIN, and under Bun also NODATA) — an answer.
 * temporary: no answer (SERVFAIL, timeout, refused, network) — ask again later, never bounce on it.
 * `code` is the resolver's own (ENOTFOUND, ENODATA, ETIMEOUT, ESERVFAIL …), as node:dns names them.
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

export interface ResolverOptions {
  /** per try, ms (Bun rounds up to seconds); default 2000 */
  timeoutMs?: number;
  /** default 2 */
  tries?: number;
}

export const DEFAULT_TIMEOUT_MS = 2000;
export const DEFAULT_TRIES = 2;

/** A node:dns resolver asking `servers` (`dns.servers`), or the system's resolver when the list is empty. */
export function nodeResolver(servers: readonly ListenAddress[], opts: ResolverOptions = {}): NodeResolver {
  const r = new NodeResolver({ timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, tries: opts.tries ?? DEFAULT_TRIES });
  if (servers.length > 0) r.setServers(servers.map(serverString));
  return r;
}

/** "host:port", or "[v6]:port", as setServers takes them. */
export function serverString(s: ListenAddress): string {
  return isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

const NOT_FOUND = new Set(["ENOTFOUND", "EBADNAME", "NXDOMAIN"]);

/** A resolver's failure as a DnsError; one already is passes through. */
export function dnsError(e: unknown, query: string): DnsError {
  if (e instanceof DnsError) return e;
  const code = errorCode(e) ?? "EUNKNOWN";
  return new DnsError(NOT_FOUND.has(code) ? "notFound" : "temporary", code, query);
}

export function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
