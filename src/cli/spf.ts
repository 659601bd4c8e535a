/**
 * @module cli/spf — `outpost spf record` (the TXT records to publish) and `outpost spf check DOMAIN` (the domain
 * check). Exit codes: 0 ok / everything passes, 3 the check found something to fix, 2 bad usage or incomplete
 * config (`spf.include_domain` or `spf.ips` not set), 1 a runtime failure.
 */
import { networkInterfaces } from "node:os";
import { recordCheck } from "../auth/verified-domains.ts";
import { BadDomainError, parseSenderDomain } from "../auth/users.ts";
import { ConfigError } from "../config/errors.ts";
import { loadConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { openStore } from "../db/client.ts";
import { UsageError } from "../mail/errors.ts";
import { secretPath } from "../runtime/bootstrap.ts";
import { domainChecker, outcomeOf, type DomainReport, type Finding } from "../spf/check.ts";
import { includeRecords, SpfRecordError } from "../spf/record.ts";
import { expectPositionals, parseArgs, showUsage } from "./args.ts";
import { print, printJson } from "./context.ts";
import { table } from "./output.ts";

export const SPF_USAGE = `usage:
  outpost spf record [--json]          the TXT records to publish at spf.include_domain, and the line customers add
  outpost spf check DOMAIN [--json]    does DOMAIN's SPF authorise every sending address? Also DKIM, DMARC and
                                       the bounce domain's MX; each problem with the record that fixes it
exit codes: 0 ok, 3 the check found something to fix, 2 bad usage or spf.include_domain/spf.ips not set, 1 failure
common: --config FILE`;

/** `spf check` found something to fix. */
export const EXIT_NEEDS_FIXING = 3;

export async function spfCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const [sub, domain] = args.positionals;
  if (args.flags.has("help") || !sub) return showUsage(SPF_USAGE, args.flags.has("help"));
  const json = args.flags.has("json");
  if (sub === "record") {
    expectPositionals(args, 1, SPF_USAGE);
    return record(loadConfig(args.values.config), json);
  }
  if (sub === "check") {
    expectPositionals(args, 2, SPF_USAGE);
    if (!domain) throw new UsageError(`spf check needs DOMAIN\n\n${SPF_USAGE}`);
    return check(loadConfig(args.values.config), checkedDomain(domain), json);
  }
  throw new UsageError(`unknown command spf ${sub}\n\n${SPF_USAGE}`);
}

function record(config: Config, json: boolean): number {
  const include = config.spf.include_domain;
  if (include === "") throw incomplete(config, "spf.include_domain", 'not set: the name customers include, e.g. "_senderspf.example.com"');
  requireIps(config);
  let records;
  try {
    records = includeRecords(include, config.spf.ips);
  } catch (e) {
    if (e instanceof SpfRecordError) throw incomplete(config, "spf.ips", e.message);
    throw e;
  }
  const bounce = config.tracking.bounce_domain;
  // VERP return paths are at the bounce domain: receivers check its SPF for that mail
  const bounceRecord = bounce ? { name: bounce, type: "TXT", value: `v=spf1 include:${include} ~all` } : null;
  if (json) {
    printJson({
      records: records.records.map((r) => ({ ...r, type: "TXT" })),
      customer: { type: "TXT", value: records.customer },
      bounce_domain: bounceRecord,
      lookups: records.lookups,
    });
    return 0;
  }
  print(`Publish at ${include}${records.records.length > 1 ? " and the records it includes" : ""} (TXT):`);
  for (const r of records.records) print(`  ${r.name}  "${r.value}"`);
  print("");
  print("Customers publish at their own domain (TXT), or add include:" + include + " to the SPF record they have:");
  print(`  "${records.customer}"`);
  print(`  (the include costs their record ${records.lookups} of its 10 DNS lookups; a and mx two more)`);
  if (bounceRecord) {
    print("");
    print(`At the bounce domain (TXT), for mail sent with bounce tracking:`);
    print(`  ${bounceRecord.name}  "${bounceRecord.value}"`);
  }
  return 0;
}

async function check(config: Config, domain: string, json: boolean): Promise<number> {
  requireIps(config);
  const report = await domainChecker(config)(domain);
  if (config.spf.require_verified_domains) saveVerdict(config, report);
  if (json) printJson(report);
  else printReport(report);
  return report.result === "pass" ? 0 : EXIT_NEEDS_FIXING;
}

/** The verdict for `spf.require_verified_domains`: a check run here verifies the domain for a running serve too. */
function saveVerdict(config: Config, report: DomainReport): void {
  const store = openStore(config.database.path, { usedBefore: secretPath(config.data_dir) });
  try {
    const { outcome, summary } = outcomeOf(report);
    recordCheck(store.db, report.domain, outcome, summary, Date.now());
  } finally {
    store.close();
  }
}

function printReport(r: DomainReport): void {
  print(`SPF of ${r.domain}: ${r.spf.records.length ? r.spf.records.map((x) => `"${x}"`).join(", ") : "no record"}`);
  print(table(r.spf.ips.map((v) => [`  ${v.ip}`, v.result, v.reason])));
  if (r.dkim.selectors.length) {
    print("DKIM:");
    print(table(r.dkim.selectors.map((s) => [`  ${s.name}`, s.result, s.reason])));
  }
  const d = r.dmarc;
  const yes = (b: boolean) => (b ? "yes" : "no");
  print(d.record ? `DMARC (${d.record_domain}): "${d.record}"` : "DMARC: no record");
  if (d.record) {
    const verp = d.verp_spf_aligned === null ? "" : `, SPF aligned with bounce tracking: ${yes(d.verp_spf_aligned)}`;
    print(`  policy ${d.policy ?? "-"}, rua ${d.rua.join(",") || "-"}, SPF aligned: ${yes(d.spf_aligned)}, DKIM aligned: ${yes(d.dkim_aligned)}${verp}`);
  }
  if (r.bounce_mx) print(`Bounce domain ${r.bounce_mx.domain} MX: ${r.bounce_mx.hosts.join(", ") || "none"}${r.bounce_mx.points_here ? " (outpost)" : ""}`);
  for (const f of r.findings) printFinding(f);
  print(`overall: ${r.result}${r.temporary ? " (DNS did not answer; try again)" : ""}`);
}

function printFinding(f: Finding): void {
  print(`${f.level} (${f.check}): ${f.message}`);
  if (f.fix) print(`  publish: ${f.fix.name} ${f.fix.type} ${f.fix.type === "TXT" ? `"${f.fix.value}"` : f.fix.value}`);
}

function checkedDomain(text: string): string {
  try {
    if (!text.startsWith("*.")) return parseSenderDomain(text);
  } catch (e) {
    if (!(e instanceof BadDomainError)) throw e;
  }
  throw new UsageError(`spf check: ${JSON.stringify(text)} is not a domain name`);
}

/** Without sending addresses nothing can be published or checked: say how to set them, and what they would be. */
function requireIps(config: Config): void {
  if (config.spf.ips.length > 0) return;
  const here = localAddresses();
  const seen = here.length ? `; this machine's addresses: ${here.map((a) => `"${a}"`).join(", ")}` : "";
  throw incomplete(config, "spf.ips", `not set: list the addresses outpost sends from, e.g. ips = [${here.map((a) => `"${a}"`).join(", ") || '"203.0.113.7"'}]${seen}`);
}

/** The machine's own addresses, as outpost would send from them: no loopback, no IPv6 link-local. */
function localAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => !a.internal && !a.address.toLowerCase().startsWith("fe80:"))
    .map((a) => a.address);
}

function incomplete(config: Config, key: string, problem: string): ConfigError {
  return new ConfigError(config.file ?? "<defaults>", key, problem);
}
