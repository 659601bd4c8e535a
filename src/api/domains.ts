/**
 * @module api/domains — GET /v1/domains/{domain}/check: the domain check (spf/check.ts) for a domain the caller
 * may send for. A user limited to some sender domains checks only those (403 naming `domain` otherwise); a user
 * with no such limit — the first-start `admin` among them — may check any. Polling is cheap: DNS answers are kept
 * for 30 s. With `spf.require_verified_domains` the verdict is recorded, so a check that passes verifies the domain.
 */
import { Elysia, t } from "elysia";
import { BadDomainError, parseSenderDomain } from "../auth/users.ts";
import { recordCheck } from "../auth/verified-domains.ts";
import { domainAllowed } from "../intake/policy.ts";
import { ApiError } from "../mail/errors.ts";
import { outcomeOf } from "../spf/check.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody } from "./model.ts";

const Fix = t.Object({ name: t.String(), type: t.String({ description: "TXT or MX" }), value: t.String() });

const Report = t.Object({
  domain: t.String(),
  result: t.String({ description: "pass when no problem was found, else fail" }),
  temporary: t.Boolean({ description: "every problem is a DNS failure: the same check may pass later" }),
  checked_at: t.String({ format: "date-time" }),
  spf: t.Object({
    result: t.String({ description: "pass when every sending address passes" }),
    records: t.Array(t.String(), { description: "the domain's SPF records as published" }),
    includes_ours: t.Boolean({ description: "the record includes spf.include_domain" }),
    ips: t.Array(
      t.Object({
        ip: t.String(),
        entry: t.String({ description: "the spf.ips entry (address or network) it stands for" }),
        result: t.String({ description: "pass, fail, softfail, neutral, none, permerror, temperror (RFC 7208)" }),
        reason: t.String(),
      }),
    ),
  }),
  dkim: t.Object({
    selectors: t.Array(
      t.Object({
        selector: t.String(),
        name: t.String(),
        result: t.String({ description: "pass, missing, mismatch, weak, invalid, temperror" }),
        bits: t.Union([t.Number(), t.Null()]),
        reason: t.String(),
      }),
    ),
  }),
  dmarc: t.Object({
    record: t.Union([t.String(), t.Null()]),
    record_domain: t.Union([t.String(), t.Null()]),
    policy: t.Union([t.String(), t.Null()], { description: "none, quarantine, reject" }),
    rua: t.Array(t.String()),
    spf_aligned: t.Boolean(),
    dkim_aligned: t.Boolean(),
    verp_spf_aligned: t.Union([t.Boolean(), t.Null()], { description: "SPF alignment of mail sent with bouncetracking" }),
  }),
  bounce_mx: t.Union([t.Object({ domain: t.String(), hosts: t.Array(t.String()), points_here: t.Boolean() }), t.Null()]),
  findings: t.Array(
    t.Object({
      check: t.String({ description: "spf, dkim, dmarc, mx" }),
      level: t.String({ description: "problem (fails the check) or warning" }),
      message: t.String(),
      fix: t.Optional(Fix),
      temporary: t.Optional(t.Boolean()),
    }),
  ),
});

export function domainRoutes(ctx: ApiContext) {
  return new Elysia().get(
    "/v1/domains/:domain/check",
    async ({ params, request }) => {
      const domain = checkedDomain(params.domain);
      const allowed = ctx.auth.principalOf(request).allowedDomains;
      if (allowed.length > 0 && !domainAllowed(allowed, domain)) {
        throw new ApiError(403, "forbidden", `you may not send for ${domain}, so you may not check it (your sender domains: ${allowed.join(", ")})`, "domain");
      }
      const report = await ctx.checkDomain(domain);
      if (ctx.config.spf.require_verified_domains) {
        const { outcome, summary } = outcomeOf(report);
        recordCheck(ctx.store.db, domain, outcome, summary, Date.now());
      }
      return report;
    },
    {
      params: t.Object({ domain: t.String({ description: "the sender domain, e.g. example.com" }) }),
      response: { 200: Report, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody },
      detail: { tags: ["domains"], summary: "Check a sender domain's SPF, DKIM and DMARC records, and the bounce domain's MX" },
    },
  );
}

/** A domain name in A-labels, lower-case; a 400 naming `domain` otherwise. */
function checkedDomain(text: string): string {
  try {
    if (!text.startsWith("*.")) return parseSenderDomain(decodeURIComponent(text));
  } catch (e) {
    if (!(e instanceof BadDomainError || e instanceof URIError)) throw e;
  }
  throw new ApiError(400, "invalid_request", `${JSON.stringify(text)} is not a domain name`, "domain");
}
