import { expect, test } from "bun:test";
import { newMessageId, newRecipientId } from "./ids.ts";

test("ids made in the same millisecond still sort in creation order and never repeat", () => {
  const ids = Array.from({ length: 5000 }, () => newMessageId(1_700_000_000_000));
  expect(new Set(ids).size).toBe(ids.length);
  expect([...ids].sort()).toEqual(ids);
});

test("ids are 20 URL-safe characters; recipient ids start with r", () => {
  expect(newMessageId()).toMatch(/^[0-9a-z]{20}$/);
  expect(newRecipientId()).toMatch(/^r[0-9a-z]{20}$/);
});
