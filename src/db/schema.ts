/** @module db/schema — every module's tables in one place, for drizzle-kit only; code imports its own module's schema. */
export * from "../auth/schema.ts";
export * from "../suppression/schema.ts";
export * from "../queue/schema.ts";
export * from "../events/schema.ts";
export * from "../bounce/schema.ts";
