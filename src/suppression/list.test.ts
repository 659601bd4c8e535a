import { expect, test } from "bun:test";
import type { UserId } from "../mail/ids.ts";
import { storeEachTest } from "../../test/helpers/harness.ts";
import { addSuppression, listAllSuppressions, removeSuppression, suppressedAmong, suppressedWhenAsked, SuppressionWriter } from "./list.ts";

const store = storeEachTest();
const ann = 1 as UserId;
const bob = 2 as UserId;

test("suppressedAmong looks at the owner's list only, and answers with comparison keys", () => {
  const w = new SuppressionWriter(store().sqlite);
  expect(w.add(ann, "Foo@Bücher.example", "hard_bounce", 1)).toBe(true);
  expect(w.add(ann, '"foo"@xn--bcher-kva.example', "manual", 2)).toBe(false);
  expect(w.add(null, "sys@example.org", "manual", 3)).toBe(true);
  const asked = ['"FOO"@XN--BCHER-KVA.EXAMPLE', "sys@example.org", "other@example.org"];
  expect(suppressedAmong(store().db, ann, asked)).toEqual(new Set(["foo@xn--bcher-kva.example"]));
  expect(suppressedAmong(store().db, ann, [asked[0]!])).toEqual(new Set(["foo@xn--bcher-kva.example"]));
  expect(suppressedAmong(store().db, bob, asked)).toEqual(new Set());
  expect(suppressedAmong(store().db, null, asked)).toEqual(new Set(["sys@example.org"]));
});

test("a complaint stays unless the operator removes it", () => {
  addSuppression(store().db, ann, "angry@example.org", "complaint");
  expect(removeSuppression(store().db, ann, "angry@example.org", "keep")).toBe("complaint");
  expect(removeSuppression(store().db, bob, "angry@example.org", "keep")).toBe("absent");
  expect(listAllSuppressions(store().db)).toHaveLength(1);
  expect(removeSuppression(store().db, ann, "Angry@Example.org", "remove")).toBe("removed");
  expect(listAllSuppressions(store().db)).toEqual([]);
});

test("a complaint takes the place of a weaker reason, never the other way round", () => {
  const w = new SuppressionWriter(store().sqlite);
  w.add(ann, "a@example.org", "unsubscribe", 1);
  expect(w.add(ann, "a@example.org", "complaint", 2)).toBe(true);
  expect(w.add(ann, "a@example.org", "hard_bounce", 3)).toBe(false);
  expect(listAllSuppressions(store().db)).toEqual([{ owner: ann, address: "a@example.org", reason: "complaint", createdAt: 1 }]);
});

test("suppressedWhenAsked reads the list when first asked, not when made, and answers like suppressedAmong", () => {
  const asked = ["Late@Example.org", "kept@example.org"];
  const set = suppressedWhenAsked(store().db, ann, asked);
  addSuppression(store().db, ann, "late@example.org", "manual");
  expect(set.has("late@example.org")).toBe(true);
  expect(set.has("kept@example.org")).toBe(false);
  expect(set.size).toBe(1);
  expect([...set]).toEqual([...suppressedAmong(store().db, ann, asked)]);
  expect(suppressedWhenAsked(store().db, bob, asked).size).toBe(0);
});
