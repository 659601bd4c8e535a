/**
 * @module spf/evaluate — what a receiver's SPF check (RFC 7208, through mailauth) says about mail from DOMAIN sent
 * by each of our addresses, and the SPF records DOMAIN publishes.
 *
 * Evaluated in mailauth's strict mode, as the strictest receiver would: the 10-lookup and 2-void-lookup limits
 * (§4.6.4), includes, redirects and macros as the RFC has them. The sender is `postmaster@DOMAIN`, the identity a
 * receiver checks for an envelope sender at DOMAIN (§2.4 uses it for an empty local part too).
 */
import { spf } from "mailauth/lib/spf";
import type { DnsLookup } from "../dns/lookup.ts";

export type SpfResult = "pass" | "fail" | "softfail" | "neutral" | "none" | "permerror" | "temperror";

export interface IpVerdict {
  /** the address evaluated */
  ip: string;
  /** the `spf.ips` entry it stands for (a network, or the address itself) */
  entry: string;
  result: SpfResult;
  /** why, in the receiver's words */
  reason: string;
}

export interface SpfEvaluation {
  verdicts: IpVerdict[];
  /** DOMAIN's TXT records that start with `v=spf1` (RFC 7208 §4.5); more than one is a permerror */
  records: string[];
  /** the TXT look-up for the records failed for now */
  recordsUnknown: boolean;
}

const RESULTS: readonly SpfResult[] = ["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"];
/** a whole evaluation's limit (RFC 7208 §4.6.4 recommends at least 20 s): beyond it, temperror */
const MAX_ELAPSED_MS = 20_000;

export async function evaluateSpf(
  domain: string,
  probes: readonly { ip: string; entry: string }[],
  lookup: DnsLookup,
  hostname: string,
): Promise<SpfEvaluation> {
  const [verdicts, found] = await Promise.all([
    Promise.all(probes.map((p) => evaluateOne(domain, p, lookup, hostname))),
    spfRecords(domain, lookup),
  ]);
  return { verdicts, records: found ?? [], recordsUnknown: found === null };
}

async function evaluateOne(domain: string, probe: { ip: string; entry: string }, lookup: DnsLookup, hostname: string): Promise<IpVerdict> {
  const out = await spf({
    sender: `postmaster@${domain}`,
    ip: probe.ip,
    helo: hostname,
    mta: hostname,
    resolver: lookup as (name: string, type: string) => Promise<string[][] | string[]>,
    strict: true,
    maxElapsedTime: MAX_ELAPSED_MS,
  });
  const result = RESULTS.find((r) => r === out.status.result) ?? "temperror";
  // mailauth words its comment for a Received-SPF header ("mta: error in processing during lookup of …: why")
  const reason = (out.status.comment ?? result).replace(/^[^:]*: /, "").replace(/^(?:permanent )?error in processing during lookup of \S+: /, "");
  return { ip: probe.ip, entry: probe.entry, result, reason };
}

/** DOMAIN's SPF records, each with its strings joined (RFC 7208 §3.3); null when DNS did not answer. */
export async function spfRecords(domain: string, lookup: DnsLookup): Promise<string[] | null> {
  try {
    const txt = (await lookup(domain, "TXT")) as string[][];
    return txt.map((strings) => strings.join("")).filter((r) => /^v=spf1(?: |$)/i.test(r));
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === "ENOTFOUND" || code === "ENODATA" ? [] : null;
  }
}

/** The `include:` and `redirect=` targets named in a record (RFC 7208 §5.2, §6.1), lower-case. */
export function namedDomains(record: string): { includes: string[]; redirect: string | null } {
  const terms = record.split(/ +/).slice(1);
  const includes = terms.flatMap((t) => {
    const m = /^[+~?-]?include:(.+)$/i.exec(t);
    return m ? [m[1]!.toLowerCase().replace(/\.$/, "")] : [];
  });
  const redirect = terms.map((t) => /^redirect=(.+)$/i.exec(t)?.[1]).find((r) => r !== undefined);
  return { includes, redirect: redirect ? redirect.toLowerCase().replace(/\.$/, "") : null };
}

/**
 * `record` with `include:{includeDomain}` added before its `all` (or `redirect=`), where a receiver evaluates it
 * before it decides; at the end when the record has neither.
 */
export function withInclude(record: string, includeDomain: string): string {
  const terms = record.trim().split(/ +/);
  const at = terms.findIndex((t, i) => i > 0 && (/^[+~?-]?all$/i.test(t) || /^redirect=/i.test(t)));
  const include = `include:${includeDomain}`;
  if (at < 0) return [...terms, include].join(" ");
  return [...terms.slice(0, at), include, ...terms.slice(at)].join(" ");
}

/**
 * One record in place of several (RFC 7208 §4.5 makes two a permerror): every mechanism of each, once, with our
 * include, ending with the first record's `all` (`~all` when none has one). Modifiers (`redirect=`, `exp=`) are
 * dropped: with several records there is no telling which one was meant.
 */
export function mergeRecords(records: readonly string[], includeDomain: string): string {
  const terms: string[] = [];
  let all: string | undefined;
  for (const record of records) {
    for (const term of record.trim().split(/ +/).slice(1)) {
      if (/^[+~?-]?all$/i.test(term)) all ??= term;
      else if (!/^[a-z][a-z0-9_.-]*=/i.test(term) && !terms.includes(term)) terms.push(term);
    }
  }
  if (!namedDomains(`v=spf1 ${terms.join(" ")}`).includes.includes(includeDomain)) terms.push(`include:${includeDomain}`);
  return ["v=spf1", ...terms, all ?? "~all"].join(" ");
}
