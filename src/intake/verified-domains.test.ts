import { afterEach, beforeEach, expect, test } from "bun:test";
import { join } from "node:path";
import { verdictOf, type CheckOutcome } from "../auth/verified-domains.ts";
import { openStore, type Store } from "../db/client.ts";
import { tempDir, waitFor } from "../../test/helpers/harness.ts";
import { IntakeError } from "./policy.ts";
import { VerifiedDomains } from "./verified-domains.ts";

const MIN = 60_000;
let dir: ReturnType<typeof tempDir>;
let store: Store;
let now: number;
/** what the next check of each domain answers, and how many checks ran */
let answers: Record<string, CheckOutcome>;
let checks: string[];

function gate(): VerifiedDomains {
  const check = async (domain: string) => {
    checks.push(domain);
    const outcome = answers[domain] ?? "fail";
    return { outcome, summary: outcome === "pass" ? "" : `${domain} publishes no SPF record` };
  };
  return new VerifiedDomains(store.db, check, { now: () => now, recheckAfterMs: 60 * MIN, retryAfterMs: 5 * MIN });
}

async function refusal(p: Promise<void>): Promise<IntakeError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof IntakeError) return e;
    throw e;
  }
  throw new Error("accepted");
}

beforeEach(() => {
  dir = tempDir();
  store = openStore(join(dir.path, "outpost.db"));
  now = 1_000_000_000_000;
  answers = {};
  checks = [];
});
afterEach(() => {
  store.close();
  dir.cleanup();
});

test("a domain is checked on first use, verified when the check passes, and not checked again within the hour", async () => {
  const g = gate();
  answers["a.test"] = "pass";
  await g.require("a.test");
  now += 59 * MIN;
  await g.require("a.test");
  expect(checks).toEqual(["a.test"]);
  expect(verdictOf(store.db, "a.test")).toMatchObject({ verified: true, lastResult: "pass" });
});

test("a domain that never passed is refused 553 5.7.1 with the first problem and how to check; retried after 5 minutes", async () => {
  const g = gate();
  const e = await refusal(g.require("b.test"));
  expect([e.code, e.enhanced, e.httpStatus, e.field]).toEqual([553, "5.7.1", 403, "from"]);
  expect(e.message).toBe("sender domain b.test is not verified, its domain check did not pass: b.test publishes no SPF record; fix it and run `outpost spf check b.test` or GET /v1/domains/b.test/check");
  answers["b.test"] = "pass";
  now += 4 * MIN;
  await refusal(g.require("b.test"));
  expect(checks).toEqual(["b.test"]);
  now += 1 * MIN;
  await g.require("b.test");
  expect(checks).toEqual(["b.test", "b.test"]);
});

test("an hour on, a verified domain's mail passes at once while the re-check runs; a failing re-check takes the verification back", async () => {
  const g = gate();
  answers["c.test"] = "pass";
  await g.require("c.test");
  answers["c.test"] = "fail";
  now += 61 * MIN;
  await g.require("c.test"); // not refused: the re-check runs in the background
  await waitFor(() => verdictOf(store.db, "c.test")?.lastResult === "fail", 2000, "the re-check");
  expect(verdictOf(store.db, "c.test")).toMatchObject({ verified: false });
  await refusal(g.require("c.test"));
});

test("a re-check that meets only DNS failures keeps a domain verified; a first check like that is a 451 to retry", async () => {
  const g = gate();
  answers["d.test"] = "pass";
  await g.require("d.test");
  answers["d.test"] = "temperror";
  now += 61 * MIN;
  await g.require("d.test");
  await waitFor(() => verdictOf(store.db, "d.test")?.lastResult === "temperror", 2000, "the re-check");
  expect(verdictOf(store.db, "d.test")).toMatchObject({ verified: true });
  answers["e.test"] = "temperror";
  const e = await refusal(g.require("e.test"));
  expect([e.code, e.enhanced, e.httpStatus]).toEqual([451, "4.7.0", 503]);
});

test("messages arriving together for an unchecked domain share one check", async () => {
  const g = gate();
  answers["f.test"] = "pass";
  await Promise.all([g.require("f.test"), g.require("f.test"), g.require("f.test")]);
  expect(checks).toEqual(["f.test"]);
});
