/** @module api/events — GET /v1/events: the caller's events, oldest first, by cursor; by type, by message. */
import { Elysia, t } from "elysia";
import { EVENT_TYPES } from "../config/build.ts";
import type { EventType } from "../config/schema.ts";
import { MAX_PAGE } from "../events/query.ts";
import { ApiError } from "../mail/errors.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody, Event } from "./model.ts";
import { checkQueryNames, limitParam } from "./params.ts";

const TYPES = new Set<string>(EVENT_TYPES);

function typesOf(param: string | undefined): EventType[] {
  if (param === undefined || param.trim() === "") return [];
  const list = param.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "");
  const unknown = list.find((s) => !TYPES.has(s));
  if (unknown) throw new ApiError(400, "invalid_request", `unknown event type ${JSON.stringify(unknown)}; one of ${[...TYPES].join(", ")}`, "type");
  return list as EventType[];
}

const EventsQuery = t.Object({
  since: t.Optional(t.String({ pattern: "^[0-9]{0,15}$", description: "next_cursor from the previous page; omitted: from the oldest event" })),
  type: t.Optional(t.String({ description: "only these event types, comma-separated (e.g. delivered,bounced)" })),
  message_id: t.Optional(t.String({ description: "only this message's events (the id POST /v1/send answered)" })),
  limit: t.Optional(t.String({ description: `events per page, 1 to ${MAX_PAGE} (default 100)` })),
});
const EVENT_PARAMS = Object.keys(EventsQuery.properties);

export function eventRoutes(ctx: ApiContext) {
  return new Elysia().get(
    "/v1/events",
    ({ query, request }) => {
      checkQueryNames(request, EVENT_PARAMS);
      const who = ctx.auth.principalOf(request);
      const page = ctx.events.pageFor({
        userId: who.userId,
        since: query.since ?? "",
        types: typesOf(query.type),
        messageId: query.message_id,
        limit: limitParam(query.limit, 100, MAX_PAGE),
      });
      return { events: page.events, next_cursor: page.nextCursor };
    },
    {
      query: EventsQuery,
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
