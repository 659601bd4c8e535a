/** @module api/suppressions — GET/POST/DELETE /v1/suppressions: the caller's own list of addresses never sent to. */
import { Elysia, t } from "elysia";
import { parseAddress } from "../mail/address.ts";
import { ApiError } from "../mail/errors.ts";
import type { UserId } from "../mail/ids.ts";
import {
  addSuppression,
  getSuppression,
  isSuppressionReason,
  listSuppressions,
  removeSuppression,
  SUPPRESSION_REASONS,
  type Suppression,
} from "../suppression/list.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody } from "./model.ts";

const REASONS = SUPPRESSION_REASONS.join(", ");

const Entry = t.Object({
  address: t.String({ description: "the address as compared: domain in A-labels, lower-case, no needless quotes" }),
  reason: t.String({ description: REASONS }),
  created_at: t.String({ format: "date-time" }),
});

const render = (s: Suppression) => ({ address: s.address, reason: s.reason, created_at: new Date(s.createdAt).toISOString() });

/** The address's comparison key, or a 400 naming `address`. */
function checkedAddress(address: string): string {
  const p = parseAddress(address.trim());
  if (!p.ok) throw new ApiError(400, "invalid_request", `${JSON.stringify(address)} is not a valid email address: ${p.reason}`, "address");
  return p.key;
}

export function suppressionRoutes(ctx: ApiContext) {
  const db = ctx.store.db;
  const owner = (request: Request): UserId => ctx.auth.principalOf(request).userId;
  return new Elysia()
    .get("/v1/suppressions", ({ request }) => ({ suppressions: listSuppressions(db, owner(request)).map(render) }), {
      response: { 200: t.Object({ suppressions: t.Array(Entry) }), 401: ErrorBody, 429: ErrorBody },
      detail: { tags: ["suppressions"], summary: "List your suppressed addresses" },
    })
    .post(
      "/v1/suppressions",
      ({ body, request, status }) => {
        const address = checkedAddress(body.address);
        const reason = body.reason ?? "manual";
        if (!isSuppressionReason(reason)) throw new ApiError(400, "invalid_request", `reason must be one of ${REASONS}`, "reason");
        const user = owner(request);
        const added = addSuppression(db, user, address, reason, Date.now());
        // the entry as stored: when it already was there, its reason may be a bounce or a complaint
        const entry = render(getSuppression(db, user, address)!); // present: just written, in this same synchronous call
        return added ? status(201, entry) : status(200, entry);
      },
      {
        body: t.Object({
          address: t.String({ description: "the address to stop sending to" }),
          reason: t.Optional(t.String({ description: `${REASONS}; default manual. A complaint entry cannot be removed again` })),
        }),
        response: { 200: Entry, 201: Entry, 400: ErrorBody, 401: ErrorBody, 429: ErrorBody },
        detail: { tags: ["suppressions"], summary: "Suppress an address (201 when added, 200 when it already was)" },
      },
    )
    .delete("/v1/suppressions/:address", ({ params, request, status }) => status(204, remove(request, params.address)), {
      params: t.Object({ address: t.String({ description: "the suppressed address (URL-encoded)" }) }),
      response: { 204: t.Void(), 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 429: ErrorBody },
      detail: { tags: ["suppressions"], summary: "Remove an address from your suppression list (not a complaint)" },
    })
    // DELETE /v1/suppressions itself takes the address as ?address= or in a JSON body
    .delete("/v1/suppressions", ({ query, body, request, status }) => status(204, remove(request, query.address ?? body?.address)), {
      query: t.Object({ address: t.Optional(t.String({ description: "the suppressed address" })) }),
      body: t.Optional(t.Object({ address: t.String({ description: "the suppressed address" }) })),
      response: { 204: t.Void(), 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 429: ErrorBody },
      detail: { tags: ["suppressions"], summary: "Remove an address from your suppression list (address in the query or body)" },
    });

  function remove(request: Request, address: string | undefined): undefined {
    if (address === undefined || address.trim() === "") throw new ApiError(400, "invalid_request", "address is required", "address");
    switch (removeSuppression(db, owner(request), address, "keep")) {
      case "removed":
        return undefined;
      case "complaint":
        throw new ApiError(403, "forbidden", `${address} is suppressed because its recipient complained; only the operator can remove it`, "reason");
      case "absent":
        throw new ApiError(404, "not_found", `${address} is not suppressed`, "address");
    }
  }
}
