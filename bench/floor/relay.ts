/**
 * bench/floor/relay.ts — the most a relay using outpost's SMTP libraries as outpost does reaches on one JavaScript
 * thread: smtp-server takes each message into memory and answers 250 at once (no queue, no disk, no policy, no
 * logging), and nodemailer's smtp-connection forwards it over reused connections, the way outpost's delivery sends
 * (with delivery/attempt.ts fastDataStream). What outpost does beyond this is what it costs to keep mail safe and
 * tracked. Loopback only.
 *
 *   bun bench/floor/relay.ts [--listen 2525] [--to 2600] [--connections 10] [--mode relay|intake]
 *
 * --mode intake answers and drops each message (smtp-server alone). Runs until SIGTERM.
 */
import { parseArgs } from "node:util";
import type net from "node:net";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import Client from "nodemailer/lib/smtp-connection";
import { fastDataStream } from "../../src/delivery/attempt.ts";
import { knownCrlf } from "../../src/message/line-ends.ts";

const { values: o } = parseArgs({
  options: {
    listen: { type: "string", default: "2525" },
    to: { type: "string", default: "2600" },
    connections: { type: "string", default: "10" },
    mode: { type: "string", default: "relay" },
  },
});
if (o.mode !== "relay" && o.mode !== "intake") throw new Error(`--mode: relay or intake, not ${o.mode}`);

interface Held { from: string; to: string[]; body: Buffer }
const queue: Held[] = [];
const idle: Array<() => void> = [];

/** No 100 ms "early talker" pause before the greeting: outpost's smtp/server.ts skips it too. */
class Connection extends SMTPConnection {
  override init(): void {
    this._setListeners(() => this.connectionReady());
  }
}
class Server extends SMTPServer {
  override connect(socket: net.Socket, options?: object | null): void {
    const c = new Connection(this, socket, options);
    this.connections.add(c);
    c.on("error", () => {});
    c.init();
  }
}

const onData: SMTPServerOptions["onData"] = (stream, session, cb) => {
  const parts: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => parts.push(chunk));
  stream.on("end", () => {
    if (o.mode === "relay") {
      const env = session.envelope;
      const to = env.rcptTo.map((r) => r.address);
      queue.push({ from: env.mailFrom ? env.mailFrom.address : "", to, body: knownCrlf(Buffer.concat(parts)) });
      idle.shift()?.();
    }
    cb();
  });
};

/** One outbound connection, opened when mail waits (bench_relay.py starts a fresh smtp-sink per run), again after it breaks. */
async function sender(): Promise<void> {
  for (;;) {
    if (queue.length === 0) await new Promise<void>((resolve) => idle.push(resolve));
    const c = new Client({ host: "127.0.0.1", port: Number(o.to), name: "floor.bench.test", ignoreTLS: true, logger: false });
    fastDataStream(c);
    let broken = false;
    c.on("error", () => (broken = true));
    c.on("end", () => (broken = true));
    const up = await new Promise<boolean>((resolve) => c.connect((e) => resolve(!e)));
    while (up && !broken) {
      const m = queue.shift();
      if (!m) {
        await new Promise<void>((resolve) => idle.push(resolve));
        continue;
      }
      const sent = await new Promise<boolean>((resolve) => c.send({ from: m.from, to: m.to }, m.body, (e) => resolve(!e)));
      if (!sent) {
        queue.unshift(m);
        break;
      }
    }
    c.close();
    await Bun.sleep(50);
  }
}

const server = new Server({ authOptional: true, disableReverseLookup: true, disabledCommands: ["STARTTLS"], size: 30_000_000, logger: false, onData });
server.listen(Number(o.listen), "127.0.0.1", () => console.log(`floor ${o.mode} listening on 127.0.0.1:${o.listen}`));
if (o.mode === "relay") for (let i = 0; i < Number(o.connections); i++) void sender();
process.on("SIGTERM", () => process.exit(0));
