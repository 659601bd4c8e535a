/**
 * `outpost spf record`, `outpost spf check DOMAIN` and `GET /v1/domains/{domain}/check` against a DNS server on
 * loopback serving good, missing and broken records: what each reports, its exit code, and the record it says to
 * publish. The records `spf record` prints are published in that DNS and must pass for every sending address.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { spf } from "mailauth/lib/spf";
import { createLookup } from "../../src/dns/lookup.ts";
import type { DomainReport } from "../../src/spf/check.ts";
import { startApi, type ApiFixture } from "../api/fixture.ts";
import { startDnsServer, type FakeDns } from "../helpers/dns-server.ts";
import { tempDir } from "../helpers/harness.ts";

const MAIN = join(import.meta.dir, "../../src/main.ts");
const INCLUDE = "_senderspf.outpost.test";
const IPS = ["203.0.113.7", "198.51.100.16/28", "2001:db8::7"];
const OURS = `include:${INCLUDE}`;

let dir: ReturnType<typeof tempDir>;
let dns: FakeDns;
let configFile: string;
let toml: string;

function pem(bits: number): { file: string; p: string } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
  const file = join(dir.path, `key-${bits}-${Math.random().toString(36).slice(2)}.pem`);
  writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }));
  return { file, p: publicKey.export({ type: "spki", format: "der" }).toString("base64") };
}

/** `outpost ARGS…` as a process; async, so the DNS server in this process keeps answering. */
async function cli(args: string[], config = configFile): Promise<{ code: number; out: string; err: string }> {
  const proc = Bun.spawn(["bun", MAIN, ...args, "--config", config], { stdout: "pipe", stderr: "pipe", env: { ...process.env, OUTPOST_LOG: "error" } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, out, err };
}

async function checkJson(domain: string): Promise<{ code: number; report: DomainReport }> {
  const r = await cli(["spf", "check", domain, "--json"]);
  if (r.code !== 0 && r.code !== 3) throw new Error(`spf check ${domain} exited ${r.code}: ${r.err}`);
  return { code: r.code, report: JSON.parse(r.out) as DomainReport };
}

const problems = (r: DomainReport, check?: string) => r.findings.filter((f) => f.level === "problem" && (!check || f.check === check));

beforeAll(async () => {
  dir = tempDir("outpost-spf-");
  const good = pem(2048);
  const other = pem(2048);
  const weak = pem(768);
  const goodSpf = `v=spf1 ${OURS} a mx ~all`;
  dns = await startDnsServer({
    "good.test": { txt: [goodSpf, "site-verification=abc"] },
    "s1._domainkey.good.test": { txt: [`v=DKIM1; k=rsa; p=${good.p}`] }, // 2048 bits: several TXT strings
    "_dmarc.good.test": { txt: ["v=DMARC1; p=reject; rua=mailto:dmarc@good.test"] },
    "none.test": { a: ["192.0.2.1"] },
    "two.test": { txt: [`v=spf1 ${OURS} ~all`, "v=spf1 mx -all"] },
    "syntax.test": { txt: [`v=spf1 ip4:300.1.1.1 ${OURS} ~all`] },
    "lookups.test": { txt: [`v=spf1 ${Array.from({ length: 10 }, (_, i) => `include:l${i}.test`).join(" ")} ${OURS} ~all`] },
    ...Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`l${i}.test`, { txt: ["v=spf1 ?all"] }])),
    "loop.test": { txt: [`v=spf1 include:loop2.test ${OURS} ~all`] },
    "loop2.test": { txt: ["v=spf1 include:loop.test ~all"] },
    "void.test": { txt: [`v=spf1 a:gone1.test a:gone2.test a:gone3.test ${OURS} ~all`] },
    "noinclude.test": { txt: ["v=spf1 mx -all"] },
    "nodkim.test": { txt: [goodSpf] },
    "wrongkey.test": { txt: [goodSpf] },
    "s1._domainkey.wrongkey.test": { txt: [`v=DKIM1; k=rsa; p=${other.p}`] },
    "weak.test": { txt: [goodSpf] },
    "s1._domainkey.weak.test": { txt: [`v=DKIM1; k=rsa; p=${weak.p}`] },
    "pnone.test": { txt: [goodSpf] },
    "_dmarc.pnone.test": { txt: ["v=DMARC1; p=none"] },
    "reject.test": { txt: ["v=spf1 mx -all"] },
    "_dmarc.reject.test": { txt: ["v=DMARC1; p=reject; rua=mailto:d@reject.test"] },
    "broken.test": { servfail: true },
    "bounces.outpost.test": { mx: [{ preference: 10, exchange: "mx.outpost.test" }] },
    "mx.outpost.test": { a: ["203.0.113.7"] },
  });
  const dkim = (domain: string, file: string) => `[[dkim]]\ndomain = "${domain}"\nselector = "s1"\nprivate_key_file = "${file}"\n`;
  toml = `hostname = "outpost.test"
[dns]
servers = ["127.0.0.1:${dns.port}"]
[spf]
include_domain = "${INCLUDE}"
ips = ${JSON.stringify(IPS)}
[tracking]
bounce_domain = "bounces.outpost.test"
${dkim("good.test", good.file)}${dkim("nodkim.test", good.file)}${dkim("wrongkey.test", good.file)}${dkim("weak.test", good.file)}`;
  configFile = join(dir.path, "outpost.toml");
  writeFileSync(configFile, `data_dir = "${join(dir.path, "data")}"\n${toml}`);
  // what `spf record` prints is what the operator publishes
  const printed = JSON.parse((await cli(["spf", "record", "--json"])).out) as { records: { name: string; value: string }[] };
  for (const r of printed.records) dns.zones[r.name] = { txt: [r.value] };
});

afterAll(async () => {
  await dns?.stop();
  dir?.cleanup();
});

describe("outpost spf record", () => {
  test("prints the record to publish at the include domain and the line customers add", async () => {
    const r = await cli(["spf", "record"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`${INCLUDE}  "v=spf1 ip4:203.0.113.7 ip4:198.51.100.16/28 ip6:2001:db8::7 ~all"`);
    expect(r.out).toContain(`"v=spf1 include:${INCLUDE} a mx ~all"`);
    expect(r.out).toContain(`bounces.outpost.test  "v=spf1 include:${INCLUDE} ~all"`);
  });

  test("the printed records, published, pass SPF for every sending address (chained when there are many)", async () => {
    const many = Array.from({ length: 60 }, (_, i) => `192.0.2.${i + 1}`);
    const file = join(dir.path, "many.toml");
    writeFileSync(file, `data_dir = "${join(dir.path, "data")}"\n[spf]\ninclude_domain = "_many.outpost.test"\nips = ${JSON.stringify(many)}\n`);
    const r = await cli(["spf", "record", "--json"], file);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out) as { records: { name: string; value: string }[]; customer: { value: string } };
    expect(printed.records.length).toBeGreaterThan(1);
    for (const rec of printed.records) dns.zones[rec.name] = { txt: [rec.value] };
    dns.zones["customer.test"] = { txt: [printed.customer.value.replace("_senderspf", "_many")] };
    const lookup = createLookup([{ host: "127.0.0.1", port: dns.port }]);
    const resolver = lookup as (name: string, type: string) => Promise<string[][]>;
    for (const ip of many) {
      const res = await spf({ sender: "app@customer.test", ip, helo: "outpost.test", mta: "test", resolver, strict: true });
      expect(`${ip} ${res.status.result}`).toBe(`${ip} pass`);
    }
  });

  test("without spf.ips it exits 2, naming the key and this machine's addresses", async () => {
    const file = join(dir.path, "noips.toml");
    writeFileSync(file, `data_dir = "${join(dir.path, "data")}"\n[spf]\ninclude_domain = "${INCLUDE}"\n`);
    const r = await cli(["spf", "record"], file);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`${file}: spf.ips: not set: list the addresses outpost sends from`);
    const check = await cli(["spf", "check", "good.test"], file);
    expect(check.code).toBe(2);
  });
});

describe("outpost spf check", () => {
  test("a domain with everything right passes: exit 0, every address pass, DKIM and DMARC aligned", async () => {
    const r = await cli(["spf", "check", "good.test"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/203\.0\.113\.7\s+pass/);
    expect(r.out).toMatch(/198\.51\.100\.31\s+pass/); // a network's last address too
    expect(r.out).toContain("overall: pass");
    const { report } = await checkJson("good.test");
    expect(report.result).toBe("pass");
    expect(report.spf.includes_ours).toBe(true);
    expect(report.spf.ips.map((v) => v.ip)).toEqual(["203.0.113.7", "198.51.100.16", "198.51.100.31", "2001:db8::7"]);
    expect(report.dkim.selectors).toEqual([expect.objectContaining({ selector: "s1", result: "pass", bits: 2048 })]);
    expect(report.dmarc).toMatchObject({ policy: "reject", rua: ["mailto:dmarc@good.test"], spf_aligned: true, dkim_aligned: true, verp_spf_aligned: false });
    expect(report.bounce_mx).toEqual({ domain: "bounces.outpost.test", hosts: ["mx.outpost.test"], points_here: true });
    expect(problems(report)).toEqual([]);
  });

  test.each([
    ["none.test", "none", /publishes no SPF record/, `v=spf1 ${OURS} a mx ~all`],
    ["two.test", "permerror", /publishes 2 SPF records/, `v=spf1 ${OURS} mx ~all`],
    ["syntax.test", "permerror", /cannot be evaluated: Invalid "ip4" term/, undefined],
    ["lookups.test", "permerror", /Too many DNS requests.*at most 10 DNS lookups/, undefined],
    ["loop.test", "permerror", /Too many DNS requests/, undefined],
    ["void.test", "permerror", /Too many void DNS results.*do not exist/, undefined],
    ["noinclude.test", "fail", /does not include _senderspf\.outpost\.test/, `v=spf1 mx ${OURS} -all`],
  ])("%s: SPF %s, exit 3, with the record to publish", async (domain, result, message, fix) => {
    const { code, report } = await checkJson(domain);
    expect(code).toBe(3);
    expect(report.result).toBe("fail");
    expect(report.spf.ips.every((v) => v.result === result)).toBe(true);
    const [finding, ...rest] = problems(report, "spf");
    expect(rest).toEqual([]);
    expect(finding!.message).toMatch(message);
    expect(finding!.fix).toEqual(fix ? { name: domain, type: "TXT", value: fix } : undefined);
  });

  test("a DKIM key that is not published is a problem, with the record to publish", async () => {
    const { code, report } = await checkJson("nodkim.test");
    expect(code).toBe(3);
    expect(report.dkim.selectors[0]).toMatchObject({ result: "missing", name: "s1._domainkey.nodkim.test" });
    const [finding] = problems(report, "dkim");
    expect(finding!.fix).toMatchObject({ name: "s1._domainkey.nodkim.test", type: "TXT" });
    expect(finding!.fix!.value).toMatch(/^v=DKIM1; k=rsa; p=MIIB/);
  });

  test("a published DKIM key that is not the configured key's public half is a mismatch", async () => {
    const { report } = await checkJson("wrongkey.test");
    expect(report.dkim.selectors[0]!.result).toBe("mismatch");
    // what to publish instead is the configured key, as published at good.test
    const good = (await checkJson("nodkim.test")).report;
    expect(problems(report, "dkim")[0]!.fix!.value).toBe(problems(good, "dkim")[0]!.fix!.value);
  });

  test("a published RSA key under 1024 bits is a problem", async () => {
    const { report } = await checkJson("weak.test");
    expect(report.dkim.selectors[0]).toMatchObject({ result: "weak" });
    expect(problems(report, "dkim")[0]!.message).toMatch(/768 bits.*1024/);
  });

  test("DMARC p=none passes with a warning; p=reject with nothing aligned fails", async () => {
    const none = await checkJson("pnone.test");
    expect(none.code).toBe(0);
    expect(none.report.dmarc.policy).toBe("none");
    const dmarc = none.report.findings.filter((f) => f.check === "dmarc");
    expect(dmarc.map((f) => f.level)).toEqual(["warning", "warning", "warning"]);
    // p=none, no rua=, and no DKIM key: mail with bounce tracking cannot align
    expect(dmarc.map((f) => f.message).join("\n")).toMatch(/p=none[\s\S]*no rua=[\s\S]*bounce tracking/);
    const reject = await checkJson("reject.test");
    expect(reject.code).toBe(3);
    expect(reject.report.dmarc).toMatchObject({ policy: "reject", spf_aligned: false, dkim_aligned: false });
    expect(problems(reject.report, "dmarc")[0]!.message).toMatch(/fails DMARC: neither SPF nor DKIM aligns/);
  });

  test("a DNS failure is a temporary problem (temperror), not a crash: exit 3", async () => {
    const { code, report } = await checkJson("broken.test");
    expect(code).toBe(3);
    expect(report.temporary).toBe(true);
    expect(report.spf.ips.every((v) => v.result === "temperror")).toBe(true);
  });

  test("a bounce domain whose MX is not outpost is a problem, with the MX to publish", async () => {
    dns.zones["bounces.outpost.test"] = { mx: [{ preference: 10, exchange: "elsewhere.test" }] };
    try {
      const { report } = await checkJson("good.test");
      expect(report.bounce_mx).toMatchObject({ points_here: false, hosts: ["elsewhere.test"] });
      expect(problems(report, "mx")[0]!.fix).toEqual({ name: "bounces.outpost.test", type: "MX", value: "10 outpost.test" });
    } finally {
      dns.zones["bounces.outpost.test"] = { mx: [{ preference: 10, exchange: "mx.outpost.test" }] };
    }
  });

  test("a bad domain or a missing one is a usage error (exit 2)", async () => {
    expect((await cli(["spf", "check", "not a domain"])).code).toBe(2);
    expect((await cli(["spf", "check"])).code).toBe(2);
  });
});

describe("GET /v1/domains/{domain}/check", () => {
  let api: ApiFixture;
  beforeAll(async () => {
    api = await startApi(toml);
  });
  afterAll(async () => {
    await api?.stop();
  });

  test("answers what `spf check --json` prints", async () => {
    const res = await api.call("GET", "/v1/domains/good.test/check");
    expect(res.status).toBe(200);
    const body = (await res.json()) as DomainReport;
    const { report } = await checkJson("good.test");
    expect({ ...body, checked_at: "" }).toEqual({ ...report, checked_at: "" });
    const broken = (await (await api.call("GET", "/v1/domains/two.test/check")).json()) as DomainReport;
    expect(broken.result).toBe("fail");
  });

  test("a user may check only the domains they may send for: 403 naming domain otherwise", async () => {
    const key = await api.addUser("carol", ["*.good.test", "pnone.test"]);
    const mine = await api.call("GET", "/v1/domains/pnone.test/check", undefined, { key });
    expect(mine.status).toBe(200);
    const theirs = await api.call("GET", "/v1/domains/good.test/check", undefined, { key });
    expect(theirs.status).toBe(403);
    expect(((await theirs.json()) as { error: { field: string } }).error.field).toBe("domain");
    const bad = await api.call("GET", "/v1/domains/not_a..domain/check");
    expect(bad.status).toBe(400);
  });
});
