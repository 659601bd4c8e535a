/**
 * @module api/compat — the drop-in APIs: Postmark's and Mailgun's send routes, so an application written for either
 * switches to outpost by changing its base URL; and which of them a request path belongs to (its key, its errors).
 */
import { Elysia } from "elysia";
import type { ApiContext } from "../context.ts";
import type { Dialect } from "./dialect.ts";
import { mailgunDialect, mailgunRoutes } from "./mailgun.ts";
import { postmarkDialect, postmarkRoutes } from "./postmark.ts";

export type { Dialect } from "./dialect.ts";

const DIALECTS: readonly Dialect[] = [postmarkDialect, mailgunDialect];

/** The drop-in API a path belongs to, or null for outpost's own. */
export function compatDialect(path: string): Dialect | null {
  return DIALECTS.find((d) => d.owns(path)) ?? null;
}

export function compatRoutes(ctx: ApiContext) {
  return new Elysia().use(postmarkRoutes(ctx)).use(mailgunRoutes(ctx));
}
