/** @module api/suppressions — GET/POST/DELETE /v1/suppressions: the instance's list of addresses never sent to. */
import { Elysia, t } from "elysia";
import { ApiError } from "../mail/errors.ts";
import { addSuppression, listSuppressions, removeSuppression, type Suppression } from "../suppression/list.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody } from "./model.ts";
import { isMailbox } from "./send/normalize.ts";

const Entry = t.Object({
  address: t.String(),
  reason: t.String({ description: "manual, hard_bounce or complaint" }),
  created_at: t.String({ format: "date-time" }),
});

const render = (s: Suppression) => ({ address: s.address, reason: s.reason, created_at: new Date(s.createdAt).toISOString() });

function checkedAddress(address: string): string {
  const a = address.trim();
  if (!isMailbox(a)) throw new ApiError(400, "invalid_request", `${JSON.stringify(address)} is not a valid email address`, "address");
  return a;
}

export function suppressionRoutes(ctx: ApiContext) {
  const db = ctx.store.db;
  return new Elysia()
    .get("/v1/suppressions", () => ({ suppressions: listSuppressions(db).map(render) }), {
      response: { 200: t.Object({ suppressions: t.Array(Entry) }), 401: ErrorBody, 429: ErrorBody },
      detail: { tags: ["suppressions"], summary: "List suppressed addresses" },
    })
    .post(
      "/v1/suppressions",
      ({ body, status }) => {
        const address = checkedAddress(body.address).toLowerCase();
        const now = Date.now();
        if (addSuppression(db, address, "manual", now)) return status(201, render({ address, reason: "manual", createdAt: now }));
        // already listed: show the entry as stored (its reason may be a bounce or a complaint)
        const entry = listSuppressions(db).find((s) => s.address === address);
        return status(200, render(entry ?? { address, reason: "manual", createdAt: now }));
      },
      {
        body: t.Object({ address: t.String({ description: "the address to stop sending to" }) }),
        response: { 200: Entry, 201: Entry, 400: ErrorBody, 401: ErrorBody, 429: ErrorBody },
        detail: { tags: ["suppressions"], summary: "Suppress an address (201 when added, 200 when it already was)" },
      },
    )
    .delete("/v1/suppressions/:address", ({ params, status }) => status(204, remove(params.address)), {
      params: t.Object({ address: t.String({ description: "the suppressed address (URL-encoded)" }) }),
      response: { 204: t.Void(), 401: ErrorBody, 404: ErrorBody, 429: ErrorBody },
      detail: { tags: ["suppressions"], summary: "Remove an address from the suppression list" },
    })
    // SPEC names DELETE /v1/suppressions itself: the address then comes as ?address= or in a JSON body
    .delete("/v1/suppressions", ({ query, body, status }) => status(204, remove(query.address ?? body?.address)), {
      query: t.Object({ address: t.Optional(t.String({ description: "the suppressed address" })) }),
      body: t.Optional(t.Object({ address: t.String({ description: "the suppressed address" }) })),
      response: { 204: t.Void(), 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 429: ErrorBody },
      detail: { tags: ["suppressions"], summary: "Remove an address from the suppression list (address in the query or body)" },
    });

  function remove(address: string | undefined): undefined {
    if (address === undefined || address.trim() === "") throw new ApiError(400, "invalid_request", "address is required", "address");
    if (!removeSuppression(db, address)) throw new ApiError(404, "not_found", `${address} is not suppressed`, "address");
    return undefined;
  }
}
