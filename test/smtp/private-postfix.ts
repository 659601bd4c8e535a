/**
 * @module test/smtp/private-postfix — a throwaway Postfix instance (Debian's binaries) with its own
 * config_directory, queue and log under a temp dir, never touching /etc/postfix or the system queue.
 * Used as a real smart-host client in tests and as the reference server in bench/smtp-intake.
 * Needs root (Postfix's master runs as root and drops to the `postfix` user).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { run } from "./fixture.ts";

export const POSTFIX = "/usr/sbin/postfix";

export interface PostfixOptions {
  /** extra main.cf lines ("name = value") */
  main: string[];
  /** an smtpd listener, "127.0.0.31:2625", or none */
  smtpd?: string;
  /** extra files in the config directory, e.g. { sasl_passwd: "…" } */
  files?: Record<string, string>;
}

export interface PostfixInstance {
  dir: string;
  configDir: string;
  queueDir: string;
  /** the master's pid, or null when it is not running */
  masterPid(): number | null;
  start(): Promise<void>;
  stop(): Promise<void>;
  sendmail(args: string[], message: string): Promise<{ code: number; stderr: string }>;
  log(): string;
  cleanup(): void;
}

/** Why a private Postfix cannot run here, or null when it can. */
export function postfixUnavailable(): string | null {
  if (!existsSync(POSTFIX)) return "Postfix is not installed (Debian package postfix)";
  if (process.getuid?.() !== 0) return "a private Postfix instance needs root";
  return null;
}

const SERVICES = [
  "pickup    unix  n       -       n       60      1       pickup",
  "cleanup   unix  n       -       n       -       0       cleanup",
  "qmgr      unix  n       -       n       300     1       qmgr",
  "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
  "rewrite   unix  -       -       n       -       -       trivial-rewrite",
  "bounce    unix  -       -       n       -       0       bounce",
  "defer     unix  -       -       n       -       0       bounce",
  "trace     unix  -       -       n       -       0       bounce",
  "verify    unix  -       -       n       -       1       verify",
  "flush     unix  n       -       n       1000?   0       flush",
  "proxymap  unix  -       -       n       -       -       proxymap",
  "smtp      unix  -       -       n       -       -       smtp",
  "relay     unix  -       -       n       -       -       smtp",
  "showq     unix  n       -       n       -       -       showq",
  "error     unix  -       -       n       -       -       error",
  "retry     unix  -       -       n       -       -       error",
  "discard   unix  -       -       n       -       -       discard",
  "anvil     unix  -       -       n       -       1       anvil",
  "scache    unix  -       -       n       -       1       scache",
  "postlog   unix-dgram n  -       n       -       1       postlogd",
];

export function privatePostfix(opts: PostfixOptions): PostfixInstance {
  const dir = mkdtempSync("/var/tmp/outpost-postfix-");
  chmodSync(dir, 0o755);
  const configDir = join(dir, "etc");
  const queueDir = join(dir, "spool");
  const dataDir = join(dir, "data");
  mkdirSync(configDir);
  // the queue root must exist; `postfix start` creates its subdirectories (post-install create-missing)
  mkdirSync(queueDir, { mode: 0o755 });
  const main = [
    "compatibility_level = 3.6",
    `queue_directory = ${queueDir}`,
    `data_directory = ${dataDir}`,
    "mail_owner = postfix",
    "setgid_group = postdrop",
    "inet_protocols = ipv4",
    "mydestination =",
    "local_transport = error:local delivery is disabled",
    "alias_maps =",
    "alias_database =",
    "biff = no",
    "smtp_dns_support_level = disabled",
    "smtpd_peername_lookup = no",
    `maillog_file = ${join(dir, "maillog")}`,
    ...opts.main,
  ];
  writeFileSync(join(configDir, "main.cf"), main.join("\n") + "\n");
  const master = [...SERVICES, ...(opts.smtpd ? [`${opts.smtpd} inet n - n - - smtpd`] : [])];
  writeFileSync(join(configDir, "master.cf"), master.join("\n") + "\n");
  for (const [name, text] of Object.entries(opts.files ?? {})) writeFileSync(join(configDir, name), text, { mode: 0o600 });

  const pf = (...args: string[]) => run([POSTFIX, "-c", configDir, ...args], { timeoutMs: 30_000 });
  const pidFile = join(queueDir, "pid", "master.pid");
  const masterPid = (): number | null => {
    try {
      const pid = Number(readFileSync(pidFile, "utf8").trim());
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  };
  return {
    dir,
    configDir,
    queueDir,
    masterPid,
    async start() {
      const r = await pf("start");
      if (r.code !== 0) throw new Error(`postfix start failed (${r.code}): ${r.stderr}${this.log()}`);
      for (let i = 0; i < 100 && masterPid() === null; i++) await Bun.sleep(50);
      if (masterPid() === null) throw new Error(`postfix master did not start: ${this.log()}`);
    },
    async stop() {
      const pid = masterPid();
      if (pid === null) return;
      await pf("stop");
      for (let i = 0; i < 100 && masterPid() !== null; i++) await Bun.sleep(50);
      // leftovers: the master's pid only (never a broad kill by name)
      const left = masterPid();
      if (left !== null) process.kill(left, "SIGKILL");
    },
    async sendmail(args, message) {
      const r = await run(["/usr/sbin/sendmail", "-C", configDir, ...args], { stdin: message, timeoutMs: 30_000 });
      return { code: r.code, stderr: r.stderr };
    },
    log() {
      try {
        return readFileSync(join(dir, "maillog"), "utf8");
      } catch {
        return "";
      }
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
