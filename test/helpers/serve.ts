/** @module test/helpers/serve — `outpost serve` from source as a child process, relaying to a test receiver. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { waitFor } from "./harness.ts";

const MAIN = join(import.meta.dir, "../../src/main.ts");

export interface ServeProcess {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** everything it printed to stdout so far (JSON log lines) */
  out: () => string;
  /** everything it printed to stderr so far (first-run secrets, a fatal error) */
  err: () => string;
  /** the SMTP port it bound (config port 0) */
  smtpPort: number;
  /** the HTTP port it bound (config port 0) */
  httpPort: number;
  /** kill -9 and wait for the exit (a crash, or the end of a test; harmless if it already exited) */
  stop(): Promise<void>;
}

/**
 * Writes DIR/outpost.toml for a loopback relay: SMTP and HTTP on port 0, 127.0.0.0/8 trusted, every domain
 * routed to the receiver at `mxHost:mxPort`; `delivery` is extra TOML for the [delivery] table.
 */
export function relayConfig(dir: string, mxHost: string, mxPort: number, delivery = ""): string {
  const file = join(dir, "outpost.toml");
  writeFileSync(
    file,
    `data_dir = ${JSON.stringify(join(dir, "data"))}
hostname = "outpost.test"
[smtp]
listen = ["127.0.0.1:0"]
trusted_networks = ["127.0.0.0/8"]
[http]
listen = "127.0.0.1:0"
[delivery]
${delivery}
[[delivery.route]]
domain = "*"
host = "${mxHost}"
port = ${mxPort}
`,
  );
  return file;
}

/** Starts `serve --config FILE` and resolves once it has started (20 s at most). */
export async function startServe(config: string): Promise<ServeProcess> {
  const proc = Bun.spawn(["bun", MAIN, "serve", "--config", config], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  let out = "";
  let err = "";
  void (async () => {
    for await (const chunk of proc.stdout) out += new TextDecoder().decode(chunk);
  })();
  void (async () => {
    for await (const chunk of proc.stderr) err += new TextDecoder().decode(chunk);
  })();
  const event = (name: string) => out.split("\n").find((l) => l.includes(`"event":"${name}"`));
  // a serve that refuses to start fails the wait at once, with what it said
  const exited = proc.exited.then((code) => Promise.reject(new Error(`serve exited ${code} before it started: ${err}`)));
  exited.catch(() => {}); // once started, a later exit is the test's business
  await Promise.race([waitFor(() => event("started"), 20_000, "serve to start"), exited]);
  const port = (name: string) => (JSON.parse(event(name)!) as { port: number }).port;
  return {
    proc,
    out: () => out,
    err: () => err,
    smtpPort: port("smtp_listening"),
    httpPort: port("http_listening"),
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** Runs `serve --config FILE` that is expected to stop by itself (refused start); 20 s at most. `as`: another user. */
export async function serveUntilExit(config: string, as?: { uid: number; gid: number }): Promise<{ code: number; out: string; err: string }> {
  const proc = Bun.spawn(["bun", MAIN, "serve", "--config", config], { stdout: "pipe", stderr: "pipe", stdin: "ignore", timeout: 20_000, ...as });
  const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  return { code, out, err };
}
