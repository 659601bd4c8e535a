/**
 * /healthz follows what the work using the store reports: a database that still answers reads but can store
 * nothing (disk full) is a 503 naming why, and back to 200 once mail is stored again.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { BODY_FILE_MIN_BYTES } from "../../src/queue/bodies.ts";
import { waitFor } from "../helpers/harness.ts";
import { errorOf, MIME, startApi, type ApiFixture } from "./fixture.ts";

let f: ApiFixture;
beforeAll(async () => {
  f = await startApi();
});
afterAll(() => f.stop());

const send = (body: string) => f.call("POST", "/v1/send", { envelope: "ann@example.com", recipient: "bob@example.org", body });

test("/healthz is a 503 naming a full disk while mail cannot be stored, and ok once it can", async () => {
  expect((await f.call("GET", "/healthz", undefined, { key: null })).status).toBe(200);
  const sqlite = f.rt.store.sqlite;
  const pages = (sqlite.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  // SQLite's own size cap on this connection, the runtime's: a new page now fails with SQLITE_FULL, as on a full disk
  sqlite.exec(`PRAGMA max_page_count = ${pages}`);
  try {
    // kept in its row (a larger body would go to a body file, outside the database): several new pages
    const big = MIME + "x".repeat(BODY_FILE_MIN_BYTES - 1_000) + "\r\n";
    expect((await send(big)).status).toBe(503);
    const health = await errorOf(await f.call("GET", "/healthz", undefined, { key: null }));
    expect(health).toMatchObject({ status: 503, code: "unavailable" });
    expect(health.message).toContain("the store is failing: intake failed (last: SQLITE_FULL: database or disk is full)");
  } finally {
    sqlite.exec("PRAGMA max_page_count = 4294967294");
  }
  expect((await send(MIME)).status).toBe(202);
  const res = await f.call("GET", "/healthz", undefined, { key: null });
  expect({ status: res.status, body: await res.json() }).toEqual({ status: 200, body: { status: "ok", queue_depth: expect.any(Number) } });
});

test("/healthz names delivery claims that keep failing, and is ok once a claim goes through", async () => {
  const sqlite = f.rt.store.sqlite;
  const loop = f.rt.delivery!.loop;
  const healthz = () => f.call("GET", "/healthz", undefined, { key: null });
  sqlite.run("ALTER TABLE recipients RENAME TO recipients_away");
  try {
    // each wake() makes the loop claim now instead of at its next idle look
    await waitFor(() => {
      loop.wake();
      return !f.rt.health.status().ok;
    }, 5_000, "claims to be reported failing");
    expect((await errorOf(await healthz())).message).toMatch(/^the store is failing: claim failed 3 times in a row \(last: SQLITE_ERROR: no such table: recipients\)/);
  } finally {
    sqlite.run("ALTER TABLE recipients_away RENAME TO recipients");
  }
  await waitFor(async () => {
    loop.wake();
    return (await healthz()).status === 200;
  }, 5_000, "/healthz to be ok again");
});
