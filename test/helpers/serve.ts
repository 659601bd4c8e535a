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
  /** the SMTP port it bound (config port 0) */
  smtpPort: number;
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

/** Starts `serve --config FILE` and resolves once its SMTP listener is up (20 s at most). */
export async function startServe(config: string): Promise<ServeProcess> {
  const proc = Bun.spawn(["bun", MAIN, "serve", "--config", config], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  let out = "";
  void (async () => {
    for await (const chunk of proc.stdout) out += new TextDecoder().decode(chunk);
  })();
  const line = await waitFor(() => out.split("\n").find((l) => l.includes('"event":"smtp_listening"')), 20_000, "smtp to listen");
  return { proc, out: () => out, smtpPort: (JSON.parse(line) as { port: number }).port };
}
