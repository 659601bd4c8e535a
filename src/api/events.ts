/** @module api/events — GET /v1/events: the caller's events, oldest first, by cursor. */
import { Elysia, t } from "elysia";
import { EVENT_TYPES } from "../config/build.ts";
import type { EventType } from "../config/schema.ts";
import { MAX_PAGE } from "../events/query.ts";
import { ApiError } from "../mail/errors.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody, Event } from "./model.ts";

const TYPES = new Set<string>(EVENT_TYPES);

function typesOf(param: string | undefined): EventType[] {
  if (param === undefined || param.trim() === "") return [];
  const list = param.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "");
  const unknown = list.find((s) => !TYPES.has(s));
  if (unknown) throw new ApiError(400, "invalid_request", `unknown event type ${JSON.stringify(unknown)}; one of ${[...TYPES].join(", ")}`, "type");
  return list as EventType[];
}

function limitOf(param: string | undefined): number {
  if (param === undefined) return 100;
  const n = Number(param);
  if (!(n >= 1 && n <= MAX_PAGE)) throw new ApiError(400, "invalid_request", `limit must be 1 to ${MAX_PAGE}`, "limit");
  return n;
}

export function eventRoutes(ctx: ApiContext) {
  return new Elysia().get(
    "/v1/events",
    ({ query, request }) => {
      const who = ctx.auth.principalOf(request);
      const page = ctx.events.pageFor({ userId: who.userId, since: query.since ?? "", types: typesOf(query.type), limit: limitOf(query.limit) });
      return { events: page.events, next_cursor: page.nextCursor };
    },
    {
      query: t.Object({
        since: t.Optional(t.String({ pattern: "^[0-9]{0,15}$", description: "next_cursor from the previous page; omitted: from the oldest event" })),
        type: t.Optional(t.String({ description: "only these event types, comma-separated (e.g. delivered,bounced)" })),
        limit: t.Optional(t.String({ pattern: "^[0-9]{1,6}$", description: `events per page, 1 to ${MAX_PAGE} (default 100)` })),
      }),
      response: {
        200: t.Object({
          events: t.Array(Event),
          next_cursor: t.String({ description: "pass as since to continue; an empty page returns the cursor it was given" }),
        }),
        400: ErrorBody,
        401: ErrorBody,
        429: ErrorBody,
      },
      detail: { tags: ["events"], summary: "The caller's events, oldest first, by cursor" },
    },
  );
}
