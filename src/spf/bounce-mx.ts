/**
 * @module spf/bounce-mx — does the bounce domain's mail come to outpost? Bounces to VERP return paths
 * (`b+TOKEN@{tracking.bounce_domain}`) reach outpost only when the bounce domain's MX hosts are outpost: a host
 * named `hostname`, or one whose addresses are among `spf.ips`.
 */
import { isIP } from "node:net";
import { cidrContains, parseCidr } from "../config/units.ts";
import type { DnsLookup } from "../dns/lookup.ts";

export interface BounceMxCheck {
  domain: string;
  /** the MX hosts, by preference */
  hosts: string[];
  /** at least one MX host is outpost */
  pointsHere: boolean;
  /** DNS did not answer */
  temperror: boolean;
}

export async function checkBounceMx(domain: string, ours: { hostname: string; ips: readonly string[] }, lookup: DnsLookup): Promise<BounceMxCheck> {
  let mx: { exchange: string; priority: number }[];
  try {
    mx = (await lookup(domain, "MX")) as { exchange: string; priority: number }[];
  } catch (e) {
    const code = (e as { code?: string }).code;
    return { domain, hosts: [], pointsHere: false, temperror: !(code === "ENOTFOUND" || code === "ENODATA") };
  }
  const hosts = [...mx].sort((a, b) => a.priority - b.priority).map((m) => m.exchange.toLowerCase().replace(/\.$/, ""));
  const checks = await Promise.all(hosts.map((h) => isOurs(h, ours, lookup)));
  return { domain, hosts, pointsHere: checks.some((c) => c === true), temperror: !checks.includes(true) && checks.includes("temperror") };
}

async function isOurs(host: string, ours: { hostname: string; ips: readonly string[] }, lookup: DnsLookup): Promise<boolean | "temperror"> {
  if (host === ours.hostname.toLowerCase()) return true;
  const answers = await Promise.allSettled([lookup(host, "A"), lookup(host, "AAAA")]);
  const addresses = answers.flatMap((a) => (a.status === "fulfilled" ? (a.value as string[]) : []));
  if (addresses.length === 0 && answers.some((a) => a.status === "rejected" && !isNotFound(a.reason))) return "temperror";
  const networks = ours.ips.map((ip) => parseCidr(ip));
  return addresses.some((address) => isIP(address) > 0 && networks.some((n) => cidrContains(n, address)));
}

function isNotFound(e: unknown): boolean {
  const code = (e as { code?: string } | null)?.code;
  return code === "ENOTFOUND" || code === "ENODATA";
}
