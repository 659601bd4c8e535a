/**
 * @module spf/dmarc — the DMARC policy a receiver applies to mail From DOMAIN (through mailauth: the record at
 * `_dmarc.DOMAIN`, else its organizational domain's, RFC 9989 §4.10), and whether mail outpost sends for DOMAIN
 * aligns with it.
 *
 * Alignment as a receiver judges it (RFC 9989 §3.2.10; `aspf`/`adkim` strict or relaxed):
 * - SPF checks the envelope sender's domain. Sent as given, the envelope sender is the customer's own address,
 *   so SPF aligns when DOMAIN's SPF passes for our addresses. With bounce tracking (VERP) the envelope sender is
 *   `b+TOKEN@{tracking.bounce_domain}`, which aligns only when the bounce domain shares DOMAIN's organizational
 *   domain (relaxed) or is DOMAIN (strict); in practice, VERP mail depends on DKIM.
 * - DKIM aligns when outpost signs with a `[[dkim]]` key of DOMAIN, or of a parent domain under relaxed
 *   alignment, that is published correctly.
 */
import { dmarc } from "mailauth/lib/dmarc";
import type { DnsLookup } from "../dns/lookup.ts";

export type DmarcPolicy = "none" | "quarantine" | "reject";

export interface DmarcCheck {
  /** the record that applies, as published; null when there is none */
  record: string | null;
  /** where it was found: `_dmarc.DOMAIN` or the organizational domain's */
  recordDomain: string | null;
  /** the policy a receiver applies to mail From DOMAIN (t=y lowers it one step) */
  policy: DmarcPolicy | null;
  /** aggregate report addresses (rua=) */
  rua: string[];
  spfAligned: boolean;
  dkimAligned: boolean;
  /** SPF alignment of mail sent with bounce tracking; null without a bounce domain */
  verpSpfAligned: boolean | null;
  /** DNS did not answer: the record is not known */
  temperror: boolean;
}

export interface DmarcInputs {
  /** DOMAIN's SPF passes for every address we send from */
  spfPasses: boolean;
  /** the d= domain of the configured key mail From DOMAIN is signed with, when it is published correctly */
  dkimDomain: string | null;
  /** `tracking.bounce_domain`, "" when not set */
  bounceDomain: string;
}

const POLICIES: readonly DmarcPolicy[] = ["none", "quarantine", "reject"];

export async function checkDmarc(domain: string, inputs: DmarcInputs, lookup: DnsLookup): Promise<DmarcCheck> {
  const resolver = lookup as (name: string, type: string) => Promise<string[][] | string[]>;
  const dkimDomains = inputs.dkimDomain ? [{ domain: inputs.dkimDomain }] : [];
  const headerFrom = `postmaster@${domain}`;
  const [direct, verp] = await Promise.all([
    dmarc({ headerFrom, spfDomains: inputs.spfPasses ? [domain] : [], dkimDomains, resolver }),
    inputs.bounceDomain ? dmarc({ headerFrom, spfDomains: [inputs.bounceDomain], dkimDomains: [], resolver }) : null,
  ]);
  const temperror = !direct || direct.status.result === "temperror";
  const record = direct && direct.rr ? direct.rr : null;
  return {
    record,
    recordDomain: record && direct ? (direct.policyDomain ?? null) : null,
    policy: record && direct ? (POLICIES.find((p) => p === direct.policy) ?? null) : null,
    rua: record ? ruaOf(record) : [],
    spfAligned: Boolean(direct && direct.alignment?.spf?.result),
    dkimAligned: Boolean(direct && direct.alignment?.dkim?.result),
    verpSpfAligned: verp ? Boolean(verp.alignment?.spf?.result) : null,
    temperror,
  };
}

/** The `rua=` URIs of a record mailauth has found valid (RFC 9989 §4.7: a comma-separated list). */
function ruaOf(record: string): string[] {
  const tag = record.split(";").map((t) => t.trim()).find((t) => /^rua\s*=/i.test(t));
  if (!tag) return [];
  return tag.slice(tag.indexOf("=") + 1).split(",").map((u) => u.trim()).filter((u) => u !== "");
}
