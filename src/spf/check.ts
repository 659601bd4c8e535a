/**
 * @module spf/check — the domain check: may outpost send for DOMAIN without its mail failing SPF, DKIM or DMARC,
 * and do bounces come back? One report for `outpost spf check DOMAIN` and `GET /v1/domains/{domain}/check`: the
 * SPF result for each sending address, the DKIM selectors, the DMARC policy and alignment, the bounce domain's MX,
 * and findings, each problem with the exact record that fixes it (docs/spf.md says what each means).
 */
import type { Config, DkimKeyConfig } from "../config/schema.ts";
import { createLookup, type DnsLookup } from "../dns/lookup.ts";
import { checkBounceMx, type BounceMxCheck } from "./bounce-mx.ts";
import { checkSelector, type SelectorCheck } from "./dkim-record.ts";
import { checkDmarc, type DmarcCheck } from "./dmarc.ts";
import { evaluateSpf, mergeRecords, namedDomains, spfRecords, withInclude, type IpVerdict, type SpfEvaluation } from "./evaluate.ts";
import { customerRecord, includeRecords, probeAddresses, SpfRecordError, type TxtRecord } from "./record.ts";

export interface DomainCheckConfig {
  hostname: string;
  /** `spf.include_domain`, "" when not set */
  includeDomain: string;
  /** `spf.ips` */
  ips: readonly string[];
  dkim: readonly DkimKeyConfig[];
  /** `tracking.bounce_domain`, "" when not set */
  bounceDomain: string;
}

export interface Fix extends TxtRecord {
  type: "TXT" | "MX";
}

export interface Finding {
  check: "spf" | "dkim" | "dmarc" | "mx";
  /** a problem fails the check; a warning is advice */
  level: "problem" | "warning";
  message: string;
  /** the record to publish */
  fix?: Fix;
  /** only DNS failed to answer: the same check may pass later */
  temporary?: true;
}

export interface DomainReport {
  domain: string;
  /** pass: no problem found */
  result: "pass" | "fail";
  /** every problem is temporary (DNS did not answer) */
  temporary: boolean;
  checked_at: string;
  spf: { result: "pass" | "fail"; records: string[]; includes_ours: boolean; ips: IpVerdict[] };
  dkim: { selectors: Omit<SelectorCheck, "expected">[] };
  dmarc: {
    record: string | null; record_domain: string | null; policy: string | null; rua: string[];
    spf_aligned: boolean; dkim_aligned: boolean; verp_spf_aligned: boolean | null;
  };
  bounce_mx: { domain: string; hosts: string[]; points_here: boolean } | null;
  findings: Finding[];
}

/** The check of `config`, asking `dns.servers` (answers kept for 30 s, dns/lookup.ts). */
export function domainChecker(config: Config, lookup: DnsLookup = createLookup(config.dns.servers)): (domain: string) => Promise<DomainReport> {
  const checkConfig: DomainCheckConfig = {
    hostname: config.hostname,
    includeDomain: config.spf.include_domain,
    ips: config.spf.ips,
    dkim: config.dkim,
    bounceDomain: config.tracking.bounce_domain,
  };
  return (domain) => checkDomain(domain, checkConfig, lookup);
}

/** A report as a verdict: pass, fail, or temperror when only DNS failures stood in the way; and the first problem. */
export function outcomeOf(report: DomainReport): { outcome: "pass" | "fail" | "temperror"; summary: string } {
  const outcome = report.result === "pass" ? "pass" : report.temporary ? "temperror" : "fail";
  return { outcome, summary: report.findings.find((f) => f.level === "problem")?.message ?? "" };
}

export async function checkDomain(domain: string, config: DomainCheckConfig, lookup: DnsLookup, now: () => number = Date.now): Promise<DomainReport> {
  const probes = config.ips.flatMap((entry) => probeAddresses(entry).map((ip) => ({ ip, entry })));
  const keys = signingKeys(domain, config.dkim);
  const [spf, ourRecords, selectors] = await Promise.all([
    evaluateSpf(domain, probes, lookup, config.hostname),
    ourRecordFindings(config, lookup),
    Promise.all(keys.map((k) => checkSelector(k, lookup))),
  ]);
  const spfPasses = probes.length > 0 && spf.verdicts.every((v) => v.result === "pass");
  const dkimDomain = selectors.some((s) => s.result === "pass") ? (keys[0]?.domain ?? null) : null;
  const [dmarc, mx] = await Promise.all([
    checkDmarc(domain, { spfPasses, dkimDomain, bounceDomain: config.bounceDomain }, lookup),
    config.bounceDomain ? checkBounceMx(config.bounceDomain, { hostname: config.hostname, ips: config.ips }, lookup) : null,
  ]);
  const findings = [
    ...(probes.length === 0 ? [{ check: "spf" as const, level: "problem" as const, message: "outpost's sending addresses (spf.ips) are not configured, so no SPF result can be told" }] : []),
    ...spfFindings(domain, spf, config),
    ...ourRecords,
    ...dkimFindings(domain, selectors),
    ...dmarcFindings(domain, dmarc, config.bounceDomain, keys.length > 0),
    ...(mx ? mxFindings(mx, config.hostname) : []),
  ];
  const problems = findings.filter((f) => f.level === "problem");
  return {
    domain,
    result: problems.length === 0 ? "pass" : "fail",
    temporary: problems.length > 0 && problems.every((p) => p.temporary),
    checked_at: new Date(now()).toISOString(),
    spf: { result: spfPasses ? "pass" : "fail", records: spf.records, includes_ours: includesOurs(spf.records, config.includeDomain), ips: spf.verdicts },
    dkim: { selectors: selectors.map(({ expected: _, ...s }) => s) },
    dmarc: {
      record: dmarc.record, record_domain: dmarc.recordDomain, policy: dmarc.policy, rua: dmarc.rua,
      spf_aligned: dmarc.spfAligned, dkim_aligned: dmarc.dkimAligned, verp_spf_aligned: dmarc.verpSpfAligned,
    },
    bounce_mx: mx ? { domain: mx.domain, hosts: mx.hosts, points_here: mx.pointsHere } : null,
    findings,
  };
}

/** The keys mail From DOMAIN is signed with: DOMAIN's, else its closest configured parent's (as dkim/sign.ts picks). */
function signingKeys(domain: string, keys: readonly DkimKeyConfig[]): DkimKeyConfig[] {
  for (let d = domain; d.includes("."); d = d.slice(d.indexOf(".") + 1)) {
    const found = keys.filter((k) => k.domain === d);
    if (found.length > 0) return found;
  }
  return [];
}

function includesOurs(records: readonly string[], includeDomain: string): boolean {
  if (!includeDomain || records.length !== 1) return false;
  const named = namedDomains(records[0]!);
  return named.includes.includes(includeDomain) || named.redirect === includeDomain;
}

const txt = (name: string, value: string): Fix => ({ name, type: "TXT", value });

function spfFindings(domain: string, spf: SpfEvaluation, config: DomainCheckConfig): Finding[] {
  const ours = config.includeDomain;
  const failing = spf.verdicts.filter((v) => v.result !== "pass");
  const problem = (message: string, fix?: Fix, temporary?: true): Finding => ({ check: "spf", level: "problem", message, ...(fix ? { fix } : {}), ...(temporary ? { temporary } : {}) });
  if (spf.recordsUnknown) return [problem(`DNS did not answer for ${domain}'s SPF record; try again later`, undefined, true)];
  const suggestion = (fix: (include: string) => string) => (ours ? txt(domain, fix(ours)) : undefined);
  if (spf.records.length === 0) return [problem(`${domain} publishes no SPF record`, suggestion(customerRecord))];
  if (spf.records.length > 1) {
    return [problem(`${domain} publishes ${spf.records.length} SPF records; receivers treat that as a permanent error (RFC 7208 §4.5): publish one instead`, suggestion((i) => mergeRecords(spf.records, i)))];
  }
  const record = spf.records[0]!;
  const included = includesOurs(spf.records, ours);
  if (failing.length === 0) {
    if (!ours || included) return [];
    return [{ check: "spf", level: "warning", message: `${domain} lists outpost's addresses itself instead of including ${ours}: when they change, its record will not follow`, fix: txt(domain, withInclude(record, ours)) }];
  }
  const temporary = failing.every((v) => v.result === "temperror");
  if (temporary) return [problem(`DNS did not answer while evaluating ${domain}'s SPF record: ${failing[0]!.reason}`, undefined, true)];
  const permanent = failing.find((v) => v.result === "permerror");
  if (permanent) return [problem(`${domain}'s SPF record cannot be evaluated: ${permanent.reason}${permerrorAdvice(permanent.reason)}`, !included ? suggestion((i) => withInclude(record, i)) : undefined)];
  const addresses = failing.map((v) => `${v.ip} (${v.result})`).join(", ");
  if (!included) return [problem(`${domain}'s SPF record does not include ${ours || "outpost's addresses"}: ${addresses}`, suggestion((i) => withInclude(record, i)))];
  // it includes ours and still does not pass: something before our include decides first, or ours is wrong (below)
  return [problem(`${domain}'s SPF record includes ${ours} but does not authorise ${addresses}; a term before the include decides first, or ${ours} itself is out of date`)];
}

function permerrorAdvice(reason: string): string {
  if (/too many dns requests/i.test(reason)) return " (a record may need at most 10 DNS lookups, RFC 7208 §4.6.4: drop includes of services no longer used, or replace them with their addresses)";
  if (/void/i.test(reason)) return " (more than 2 names in the record do not exist, RFC 7208 §4.6.4: remove the ones that are gone)";
  return "";
}

/**
 * Is outpost's own chain published as `outpost spf record` prints it? A problem of the operator's, shown in every
 * customer's check, since every customer's SPF depends on it. (Compared as text rather than evaluated: SPF
 * evaluation starts from a host name, and `_senderspf…` is none.)
 */
async function ourRecordFindings(config: DomainCheckConfig, lookup: DnsLookup): Promise<Finding[]> {
  if (!config.includeDomain || config.ips.length === 0) return [];
  let expected: TxtRecord[];
  try {
    expected = includeRecords(config.includeDomain, config.ips).records;
  } catch (e) {
    if (e instanceof SpfRecordError) return [{ check: "spf", level: "problem", message: e.message }];
    throw e;
  }
  const found = await Promise.all(expected.map((r) => spfRecords(r.name, lookup)));
  return expected.flatMap((want, i): Finding[] => {
    const got = found[i] ?? null;
    if (got === null) return [{ check: "spf", level: "problem", message: `DNS did not answer for ${want.name}; try again later`, temporary: true }];
    if (got.length === 1 && normal(got[0]!) === normal(want.value)) return [];
    const what = got.length === 0 ? "no SPF record" : got.length > 1 ? `${got.length} SPF records` : `"${got[0]}"`;
    return [{ check: "spf", level: "problem", message: `outpost's own record at ${want.name} is ${what}, not what \`outpost spf record\` prints`, fix: txt(want.name, want.value) }];
  });
}

const normal = (record: string) => record.trim().toLowerCase().split(/ +/).join(" ");

function dkimFindings(domain: string, selectors: SelectorCheck[]): Finding[] {
  if (selectors.length === 0) {
    return [{ check: "dkim", level: "warning", message: `no [[dkim]] key is configured for ${domain}, so outpost does not sign its mail: make one with \`outpost dkim generate ${domain}\`` }];
  }
  return selectors
    .filter((s) => s.result !== "pass")
    .map((s) => {
      // the configured key, published as it is (none when the key itself is unusable: that needs a new key)
      const fix = s.expected ? { fix: { name: s.expected.name, type: "TXT" as const, value: s.expected.value } } : {};
      return { check: "dkim", level: "problem", message: `selector ${s.selector}: ${s.reason}`, ...fix, ...(s.result === "temperror" ? { temporary: true as const } : {}) };
    });
}

function dmarcFindings(domain: string, d: DmarcCheck, bounceDomain: string, hasKey: boolean): Finding[] {
  if (d.temperror) return [{ check: "dmarc", level: "problem", message: `DNS did not answer for _dmarc.${domain}; try again later`, temporary: true }];
  if (!d.record) {
    return [{
      check: "dmarc", level: "warning",
      message: `${domain} publishes no DMARC record; large receivers (Gmail, Yahoo) require one from bulk senders`,
      fix: txt(`_dmarc.${domain}`, `v=DMARC1; p=none; rua=mailto:postmaster@${domain}`),
    }];
  }
  const out: Finding[] = [];
  const enforcing = d.policy === "quarantine" || d.policy === "reject";
  if (!enforcing) out.push({ check: "dmarc", level: "warning", message: `the DMARC policy is p=none: receivers report failures but deliver forged mail in ${domain}'s name` });
  if (d.rua.length === 0) out.push({ check: "dmarc", level: "warning", message: "the DMARC record has no rua=, so no one receives aggregate reports" });
  const dkimHint = hasKey ? "publish the DKIM key (above)" : `configure a DKIM key for ${domain}`;
  if (!d.spfAligned && !d.dkimAligned) {
    out.push({ check: "dmarc", level: enforcing ? "problem" : "warning", message: `mail outpost sends From ${domain} fails DMARC: neither SPF nor DKIM aligns; fix SPF, or ${dkimHint}` });
  } else if (bounceDomain && !d.dkimAligned && d.verpSpfAligned === false) {
    out.push({
      check: "dmarc", level: enforcing ? "problem" : "warning",
      message: `mail sent with bounce tracking (envelope sender at ${bounceDomain}) fails DMARC for ${domain}: SPF cannot align, so it needs DKIM; ${dkimHint}`,
    });
  }
  return out;
}

function mxFindings(mx: BounceMxCheck, hostname: string): Finding[] {
  if (mx.pointsHere) return [];
  if (mx.temperror) return [{ check: "mx", level: "problem", message: `DNS did not answer for ${mx.domain}'s MX; try again later`, temporary: true }];
  const where = mx.hosts.length ? `to ${mx.hosts.join(", ")}, not to outpost` : "nowhere (no MX record)";
  return [{
    check: "mx", level: "problem",
    message: `mail to the bounce domain ${mx.domain} goes ${where}: bounces of tracked mail are lost`,
    fix: { name: mx.domain, type: "MX", value: `10 ${hostname}` },
  }];
}
