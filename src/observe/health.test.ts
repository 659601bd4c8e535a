import { describe, expect, test } from "bun:test";
import { FAILURES_IN_A_ROW, reported, StoreHealth } from "./health.ts";

/** An error as bun:sqlite throws it: SQLiteError with the SQLite code as a string. */
const sqliteError = (code: string, message: string) => Object.assign(new Error(message), { code });

describe("StoreHealth", () => {
  test("a lock timeout now and then is not an outage; that many in a row is", () => {
    const health = new StoreHealth(() => 1_000);
    const claim = health.reporter("claim");
    for (let i = 1; i < FAILURES_IN_A_ROW; i++) claim.failed(sqliteError("SQLITE_BUSY", "database is locked"));
    expect(health.status()).toEqual({ ok: true });
    claim.failed(sqliteError("SQLITE_BUSY", "database is locked"));
    expect(health.status()).toEqual({ ok: false, since: 1_000, reason: `the store is failing: claim failed ${FAILURES_IN_A_ROW} times in a row (last: SQLITE_BUSY: database is locked)` });
  });

  test("a full disk, an I/O error or a read-only file fails at once", () => {
    for (const code of ["SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_READONLY", "SQLITE_CORRUPT"]) {
      const health = new StoreHealth();
      health.reporter("intake").failed(sqliteError(code, "x"));
      expect(health.status(), code).toMatchObject({ ok: false, reason: `the store is failing: intake failed (last: ${code}: x)` });
    }
  });

  test("a refused row (a unique key taken) is the store answering, not failing", () => {
    const health = new StoreHealth();
    const intake = health.reporter("intake");
    for (let i = 0; i < FAILURES_IN_A_ROW + 1; i++) intake.failed(sqliteError("SQLITE_CONSTRAINT_UNIQUE", "UNIQUE constraint failed"));
    expect(health.status()).toEqual({ ok: true });
  });

  test("only the failing work's own success clears it; a success in between starts the count again", () => {
    const health = new StoreHealth();
    const intake = health.reporter("intake");
    const claim = health.reporter("claim");
    intake.failed(sqliteError("SQLITE_FULL", "database or disk is full"));
    claim.succeeded(); // an idle claim writes nothing, so it proves nothing about the disk
    expect(health.status().ok).toBe(false);
    intake.succeeded();
    expect(health.status()).toEqual({ ok: true });
    claim.failed(new Error("x"));
    claim.failed(new Error("x"));
    claim.succeeded();
    claim.failed(new Error("x"));
    expect(health.status()).toEqual({ ok: true });
  });

  test("reported() passes the result or the error through and reports each", () => {
    const health = new StoreHealth();
    const settle = health.reporter("settle");
    expect(reported(settle, () => 7)).toBe(7);
    expect(() => reported(settle, () => { throw sqliteError("SQLITE_IOERR", "disk I/O error"); })).toThrow("disk I/O error");
    expect(health.status().ok).toBe(false);
  });
});
