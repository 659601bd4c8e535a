/**
 * @module test/smtp/private-exim — a throwaway Exim (Debian's exim4-daemon-light binary) run with `-C` on a
 * config of its own, with its spool and logs in a temp dir. Debian's exim4 and postfix packages conflict (both
 * are the mail-transport-agent), so .ci/run unpacks Exim's packages into .tools/exim4 instead of installing
 * them, and adds the `Debian-exim` user the binary is built to run deliveries as. Needs root.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./fixture.ts";

/** Where .ci/run unpacks Exim, else an installed one. */
const CANDIDATES = [join(import.meta.dir, "../../.tools/exim4/usr/sbin/exim4"), "/usr/sbin/exim4"];
const EXIM_USER = "Debian-exim";

/** Why a private Exim cannot run here, or null when it can. */
export function eximUnavailable(): string | null {
  if (!CANDIDATES.some((c) => existsSync(c))) {
    return "Exim is not here (.ci/run unpacks Debian's exim4-daemon-light into .tools/exim4)";
  }
  if (process.getuid?.() !== 0) return "a private Exim instance needs root";
  if (eximIds() === null) return `the user ${EXIM_USER} that Debian's Exim runs deliveries as does not exist (.ci/run adds it)`;
  return null;
}

function eximIds(): { uid: number; gid: number } | null {
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${EXIM_USER}:`));
  if (!line) return null;
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

export interface EximSections {
  routers: string;
  transports: string;
  authenticators: string;
}

export interface EximInstance {
  dir: string;
  /** writes the config: this instance's own main section, then the given sections under their `begin` lines */
  configure(sections: EximSections): void;
  /** `exim -C config -odf ARGS` with the message on stdin: delivery is attempted before it returns */
  submit(args: string[], message: string): Promise<{ code: number; stderr: string }>;
  /** readable by Exim's delivery processes (which run as Debian-exim), by no one else */
  shareWithExim(path: string): void;
  /** the main log */
  log(): string;
  cleanup(): void;
}

export function privateExim(): EximInstance {
  const exim = CANDIDATES.find((c) => existsSync(c))!;
  const ids = eximIds()!;
  const dir = mkdtempSync("/var/tmp/outpost-exim-");
  chmodSync(dir, 0o755);
  const spool = join(dir, "spool");
  mkdirSync(spool, { mode: 0o750 });
  chownSync(spool, ids.uid, ids.gid);
  const config = join(dir, "exim.conf");
  return {
    dir,
    configure(s) {
      const main = [
        "primary_hostname = app-server.test",
        // Exim re-executes itself for deliveries: this copy, not the one it was built for (/usr/sbin/exim4)
        `exim_path = ${exim}`,
        "domainlist local_domains = @",
        `spool_directory = ${spool}`,
        `log_file_path = ${spool}/log/%slog`,
        "keep_environment =",
        // no DNS in tests: the route names an address
        "host_lookup =",
        // outpost listens on this machine's 127.0.0.1, which Exim would otherwise refuse as "the local host"
        "local_interfaces = 127.0.0.254",
      ];
      const text = [...main, "begin routers", s.routers, "begin transports", s.transports, "begin authenticators", s.authenticators].join("\n");
      writeFileSync(config, `${text}\n`, { mode: 0o644 });
    },
    async submit(args, message) {
      const r = await run([exim, "-C", config, "-odf", ...args], { stdin: message, timeoutMs: 30_000 });
      return { code: r.code, stderr: r.stderr };
    },
    shareWithExim(path) {
      chownSync(path, 0, ids.gid);
      chmodSync(path, 0o640);
    },
    log() {
      try {
        return readFileSync(join(spool, "log", "mainlog"), "utf8");
      } catch {
        return "";
      }
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
