/** .ci/run's last line, `N passed, M failed`, tells the truth about this run, whatever make did. */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../helpers/harness.ts";

const RUN = join(import.meta.dir, "../../.ci/run");
let dir: { path: string; cleanup: () => void };

function report(passed: number, failed: number): string {
  const cases = [
    ...Array.from({ length: passed }, (_, i) => `<testcase name="p${i}"/>`),
    ...Array.from({ length: failed }, (_, i) => `<testcase name="f${i}"><failure/></testcase>`),
  ];
  return `<?xml version="1.0"?><testsuites><testsuite name="s">${cases.join("")}</testsuite></testsuites>`;
}

function tool(name: string, script: string) {
  const file = join(dir.path, "bin", name);
  writeFileSync(file, `#!/usr/bin/env bash\n${script}\n`);
  chmodSync(file, 0o755);
}

/** .ci/run copied into a scratch tree, with a fake `make` (and the tools it would otherwise install) on PATH */
function ciRun(makeScript: string) {
  tool("make", makeScript);
  const p = Bun.spawnSync([join(dir.path, ".ci/run")], {
    cwd: dir.path,
    env: { ...process.env, PATH: `${join(dir.path, "bin")}:${process.env.PATH}` },
  });
  const lines = p.stdout.toString().trim().split("\n");
  return { code: p.exitCode, last: lines.at(-1) };
}

beforeEach(() => {
  dir = tempDir();
  mkdirSync(join(dir.path, ".ci/out"), { recursive: true });
  mkdirSync(join(dir.path, "bin"));
  copyFileSync(RUN, join(dir.path, ".ci/run"));
  chmodSync(join(dir.path, ".ci/run"), 0o755);
  for (const t of ["swaks", "smtp-sink", "dnsmasq", "msmtp", "exim4"]) tool(t, "exit 0");
  // what an earlier, green run left behind
  writeFileSync(join(dir.path, ".ci/out/junit.xml"), report(729, 0));
});
afterEach(() => dir.cleanup());

test("a failed type check (no report written) is not reported with the previous run's numbers", () => {
  const r = ciRun("echo 'error TS2339' >&2; exit 2");
  expect(r.code).toBe(2);
  expect(r.last).toBe("0 passed, 1 failed");
});

test("make failing while its report shows no failure still counts one", () => {
  const r = ciRun(`echo '${report(3, 0)}' > .ci/out/junit.xml; exit 1`);
  expect(r.code).toBe(1);
  expect(r.last).toBe("3 passed, 1 failed");
});

test("failures in the report are counted as they are, and a green run stays green", () => {
  expect(ciRun(`echo '${report(3, 2)}' > .ci/out/junit.xml; exit 1`).last).toBe("3 passed, 2 failed");
  const green = ciRun(`echo '${report(4, 0)}' > .ci/out/junit.xml; exit 0`);
  expect(green.code).toBe(0);
  expect(green.last).toBe("4 passed, 0 failed");
});

test("a report cut short by a crash counts as a failure", () => {
  expect(ciRun(`echo '<testsuites><testsuite><testcase' > .ci/out/junit.xml; exit 1`).last).toBe("0 passed, 1 failed");
});
