/**
 * @module spf/record — the SPF records outpost's operator publishes at `spf.include_domain`, and the one line a
 * customer adds (pure).
 *
 * `spf.ips` become `ip4:`/`ip6:` mechanisms (RFC 7208 §5.6). A TXT record's strings are at most 255 octets each
 * (RFC 1035 §3.3.14); a record could hold several, but many DNS control panels take one string only, so when the
 * mechanisms do not fit one string they go into a chain: `{include_domain}` lists what fits and ends with
 * `include:_spf2.{include_domain}`, which lists the next part and includes `_spf3.…`, and so on. Every link is
 * one more of the 10 DNS lookups a receiver allows for the customer's whole record (RFC 7208 §4.6.4); the
 * customer's own line spends two more (`a`, `mx`), so the chain may have at most 7 links, leaving one spare.
 */
import { isIP } from "node:net";
import { lastAddress, parseCidr } from "../config/units.ts";

/** One TXT record to publish. */
export interface TxtRecord {
  name: string;
  value: string;
}

export interface IncludeRecords {
  /** the chain, `include_domain` first */
  records: TxtRecord[];
  /** what a customer publishes at their own domain */
  customer: string;
  /** DNS lookups a customer's record spends on our include: one per link */
  lookups: number;
}

export class SpfRecordError extends Error {}

const MAX_STRING = 255;
export const MAX_LINKS = 7;
const TAIL = " ~all";

/** The line a customer adds at their domain: our include, their own web and mail hosts, softfail the rest. */
export function customerRecord(includeDomain: string): string {
  return `v=spf1 include:${includeDomain} a mx ~all`;
}

/** The name of the chain's link `n` (1-based): the include domain itself, then `_spfN.{include domain}`. */
export function linkName(includeDomain: string, n: number): string {
  return n === 1 ? includeDomain : `_spf${n}.${includeDomain}`;
}

/** `ip4:203.0.113.7`, `ip4:203.0.113.0/28`, `ip6:2001:db8::/48` for an address or network of `spf.ips`. */
export function mechanismOf(entry: string): string {
  const cidr = parseCidr(entry);
  const single = cidr.prefix === (cidr.family === 4 ? 32 : 128);
  return `ip${cidr.family}:${single ? cidr.address : `${cidr.address}/${cidr.prefix}`}`;
}

/** The records for `ips` at `includeDomain`; throws SpfRecordError when they need more links than a customer can spare. */
export function includeRecords(includeDomain: string, ips: readonly string[]): IncludeRecords {
  const links: string[][] = [[]];
  for (const m of ips.map(mechanismOf)) {
    const current = links[links.length - 1]!;
    // room for this mechanism and for the include of a next link, which this one may yet need
    const next = ` include:${linkName(includeDomain, links.length + 1)}`;
    if (current.length > 0 && octets(["v=spf1", ...current, m].join(" ") + next + TAIL) > MAX_STRING) links.push([m]);
    else current.push(m);
  }
  if (links.length > MAX_LINKS) {
    throw new SpfRecordError(
      `spf.ips needs ${links.length} chained records, more than the ${MAX_LINKS} DNS lookups a customer's record can spare; ` +
        `list neighbouring addresses as one network (e.g. "203.0.113.0/28")`,
    );
  }
  const records = links.map((mechs, i) => {
    const more = i + 1 < links.length ? [`include:${linkName(includeDomain, i + 2)}`] : [];
    return { name: linkName(includeDomain, i + 1), value: ["v=spf1", ...mechs, ...more].join(" ") + TAIL };
  });
  return { records, customer: customerRecord(includeDomain), lookups: records.length };
}

/**
 * The addresses a check evaluates for one `spf.ips` entry: the address itself, or a network's first and last
 * address (a record that authorises both ends of a range published as one mechanism authorises all of it).
 */
export function probeAddresses(entry: string): string[] {
  if (isIP(entry)) return [entry];
  const cidr = parseCidr(entry);
  return [cidr.address, lastAddress(cidr)];
}

function octets(s: string): number {
  return Buffer.byteLength(s, "utf8");
}
