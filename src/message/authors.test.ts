import { expect, test } from "bun:test";
import { authorsOf } from "./authors.ts";
import { splitMessage } from "./headers.ts";

const of = (head: string) => authorsOf(splitMessage(Buffer.from(`${head}\r\nSubject: x\r\n\r\nbody\r\n`, "latin1")));

test("every mailbox of every From and Sender field, display names, comments and groups aside", () => {
  expect(of('From: "Boss, The" <boss@bank.test> (CEO), ann@example.com\r\nSender: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>')).toEqual({
    from: ["boss@bank.test", "ann@example.com"],
    sender: ["jorg@example.com"],
  });
  expect(of("From: team: a@x.test, b@y.test;\r\nFrom: c@z.test").from).toEqual(["a@x.test", "b@y.test", "c@z.test"]);
});

test("a field with no address counts as one empty address; no field, none", () => {
  expect(of("From: undisclosed-recipients:;")).toEqual({ from: [""], sender: [] });
  expect(of("To: a@x.test")).toEqual({ from: [], sender: [] });
});

test("a field read again gives the same addresses, and a caller changing its answer changes no later one", () => {
  const first = of("From: Ann <ann@example.com>");
  first.from.push("mallory@evil.test");
  first.from[0] = "x@y.test";
  expect(of("From: Ann <ann@example.com>")).toEqual({ from: ["ann@example.com"], sender: [] });
  expect(of("From: Ann <ann@example.org>").from).toEqual(["ann@example.org"]);
});
