import { describe, expect, test } from "bun:test";
import { IntakeError } from "../intake/policy.ts";
import { ApiError } from "../mail/errors.ts";
import { createLogger } from "../observe/log.ts";
import { errorResponse, fieldFromPath, RetryLaterError, viewOf } from "./errors.ts";

function capture() {
  const lines: string[] = [];
  return { lines, log: createLogger("debug", (l) => lines.push(l)) };
}

describe("viewOf", () => {
  test("a store failure at intake is a logged 503 with Retry-After: 1", async () => {
    const { lines, log } = capture();
    const failed = new IntakeError(451, "4.3.0", "temporary failure storing the message, try again", 503, undefined, new Error("disk I/O error"));
    const view = viewOf(failed, "UNKNOWN", log);
    expect(view).toEqual({ status: 503, code: "unavailable", message: failed.message, field: null, retryAfter: 1 });
    expect(lines.join("\n")).toContain("disk I/O error");
    const res = errorResponse(view);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(await res.json()).toEqual({ error: { code: "unavailable", message: failed.message, field: null } });
  });

  test("an intake refusal keeps its HTTP status and field", () => {
    const refused = new IntakeError(553, "5.7.1", "sender not allowed", 403, "envelope");
    expect(viewOf(refused, "UNKNOWN", capture().log)).toEqual({ status: 403, code: "forbidden", message: "sender not allowed", field: "envelope" });
  });

  test("an error thrown by a parse hook is found inside Elysia's wrapper", () => {
    const inner = new ApiError(400, "invalid_request", "unknown field", "recipent");
    const wrapped = new Error("parse failed", { cause: inner });
    expect(viewOf(wrapped, "PARSE", capture().log)).toMatchObject({ status: 400, field: "recipent", message: "unknown field" });
  });

  test("a rate refusal carries its wait", () => {
    expect(viewOf(new RetryLaterError(429, "slow down", 7), "UNKNOWN", capture().log)).toMatchObject({ status: 429, code: "rate_limited", retryAfter: 7 });
  });

  test("anything else is a logged 500 that does not leak the message", () => {
    const { lines, log } = capture();
    expect(viewOf(new TypeError("secret detail"), "UNKNOWN", log)).toEqual({ status: 500, code: "internal_error", message: "internal error", field: null });
    expect(lines.join("\n")).toContain("api_internal_error");
  });
});

test("fieldFromPath renders a JSON pointer as the field name a user wrote", () => {
  expect(fieldFromPath("/attachments/0/content")).toBe("attachments[0].content");
  expect(fieldFromPath("/recipient")).toBe("recipient");
  expect(fieldFromPath("")).toBeNull();
});
