/** contrib/outpost.service carries what the foundation issue asks of the systemd unit. */
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const UNIT = join(import.meta.dir, "../../contrib/outpost.service");

/** directive name → values, for the [Service] section only (comments and other sections skipped) */
function serviceDirectives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[")) {
      section = line;
      continue;
    }
    const eq = line.indexOf("=");
    if (section !== "[Service]" || eq < 0) continue;
    const key = line.slice(0, eq).trim();
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return out;
}

test("the unit runs outpost serve as a dedicated user, reloads with SIGHUP, restarts on failure, and is hardened", () => {
  const d = serviceDirectives(readFileSync(UNIT, "utf8"));
  const one = (key: string) => {
    const v = d.get(key);
    expect(v, key).toBeDefined();
    return v!.at(-1)!;
  };
  expect(one("Type")).toBe("simple");
  expect(one("ExecStart")).toMatch(/^\S*\/outpost serve --config \/etc\/outpost\/outpost\.toml$/);
  expect(one("User")).toMatch(/^[a-z_][a-z0-9_-]*$/);
  expect(one("User")).not.toBe("root");
  // `systemctl reload` sends SIGHUP: config and certificate read again without a restart
  expect(one("ExecReload")).toBe("/bin/kill -HUP $MAINPID");
  expect(one("Restart")).toBe("on-failure");
  // exit 2 is a bad config: restarting cannot fix it
  expect(one("RestartPreventExitStatus").split(/\s+/)).toContain("2");
  expect(one("SystemCallFilter")).toBe("@system-service");
  expect(one("NoNewPrivileges")).toMatch(/^(yes|true)$/);
  expect(one("ProtectSystem")).toBe("strict");
  expect(one("AmbientCapabilities").split(/\s+/)).toContain("CAP_NET_BIND_SERVICE");
  // the data dir must stay writable under ProtectSystem=strict
  expect(one("ReadWritePaths").split(/\s+/)).toContain("/var/lib/outpost");
});

test.skipIf(!Bun.which("systemd-analyze"))("the unit passes systemd-analyze verify", () => {
  const dir = mkdtempSync(join(tmpdir(), "outpost-unit-"));
  try {
    // the binary is not installed here: point ExecStart at one that is, the rest is checked as written
    writeFileSync(join(dir, "outpost.service"), readFileSync(UNIT, "utf8").replace(/^ExecStart=\S+/m, "ExecStart=/bin/true"));
    const r = Bun.spawnSync(["systemd-analyze", "verify", join(dir, "outpost.service")]);
    expect({ code: r.exitCode, err: r.stderr.toString() }).toEqual({ code: 0, err: "" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
