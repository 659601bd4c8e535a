/**
 * @module dns/lookup — one function for the questions the domain check asks, `(name, type) → records`, shaped as
 * node:dns's `resolve(name, type)` answers them (what mailauth takes as its resolver): TXT through dns/txt.ts, the
 * rest through the node:dns resolver. Failures keep node:dns's codes (ENOTFOUND, ENODATA, ETIMEOUT, ESERVFAIL …),
 * which is how mailauth tells a void lookup from a temporary error (RFC 7208 §4.6.4, §5).
 *
 * Answers, and the answer that a record does not exist, are kept for `cacheMs` (default 30 s, whatever the
 * record's TTL says, never longer), so a client polling a domain's check does not cost a DNS round each time
 * and a fixed record shows within half a minute; temporary failures are never kept.
 */
import type { ListenAddress } from "../config/schema.ts";
import { dnsError, DnsError, nodeResolver, type ResolverOptions } from "./resolver.ts";
import { txtResolver } from "./txt.ts";

/** Records as node:dns gives them: string[][] for TXT, {exchange, priority}[] for MX, string[] for A/AAAA/PTR. */
export type DnsLookup = (name: string, type: string) => Promise<unknown[]>;

export interface LookupOptions extends ResolverOptions {
  cacheMs?: number;
  now?: () => number;
}

const MAX_ENTRIES = 10_000;

export function createLookup(servers: readonly ListenAddress[], opts: LookupOptions = {}): DnsLookup {
  const resolver = nodeResolver(servers, opts);
  const txt = txtResolver(servers, opts);
  const ask = async (name: string, type: string): Promise<unknown[]> => {
    if (type === "TXT") return txt(name);
    try {
      const answer: unknown = await resolver.resolve(name, type);
      // SOA is the one type answered with an object; the check never asks for it
      return Array.isArray(answer) ? answer : [answer];
    } catch (e) {
      throw dnsError(e, `${name} ${type}`);
    }
  };
  return cached(ask, opts.cacheMs ?? 30_000, opts.now ?? Date.now);
}

/** Keeps answers and "no such record" for `ttlMs`; a question asked while one is in flight shares it. */
function cached(ask: DnsLookup, ttlMs: number, now: () => number): DnsLookup {
  const entries = new Map<string, { until: number; answer: Promise<unknown[]> }>();
  return (name, type) => {
    const key = `${type} ${name.toLowerCase().replace(/\.$/, "")}`;
    const hit = entries.get(key);
    if (hit && hit.until > now()) return hit.answer;
    if (entries.size >= MAX_ENTRIES) entries.clear();
    const answer = ask(name, type);
    const entry = { until: now() + ttlMs, answer };
    entries.set(key, entry);
    answer.catch((e: unknown) => {
      if (!(e instanceof DnsError && e.kind === "notFound") && entries.get(key) === entry) entries.delete(key);
    });
    return answer;
  };
}
