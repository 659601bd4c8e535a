/**
 * `outpost serve` as a child process, SIGTERM while an SMTP client sits idle after EHLO (SMTP's close waits up
 * to 10 s for it) and a delivery is stuck on a receiver that answers MAIL only after 60 s: all of shutdown
 * shares one deadline, so the process exits 0 before serve's 30 s limit and hands the stuck recipient back.
 * (Stopping services one after another gave SMTP 10 s and then delivery 25 s more: exit 1 at 30 s, a row leased.)
 */
import { afterEach, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { startFakeMx, type FakeMx } from "../helpers/fake-mx.ts";
import { tempDir, waitFor } from "../helpers/harness.ts";
import { relayConfig, startServe } from "../helpers/serve.ts";

const RECEIVER_DELAY_MS = 60_000;

let proc: Subprocess<"ignore", "pipe", "pipe"> | null = null;
let mx: FakeMx | null = null;
let dir: ReturnType<typeof tempDir> | null = null;
const sockets: Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  if (proc) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
  await mx?.stop();
  dir?.cleanup();
  proc = mx = dir = null;
});

/** A plain SMTP client on a socket: `say` sends a line (or nothing) and resolves with the next complete reply. */
async function smtpClient(port: number): Promise<{ say: (line?: string) => Promise<string> }> {
  const socket = connect(port, "127.0.0.1");
  sockets.push(socket);
  let buffer = "";
  let waiting: ((reply: string) => void) | null = null;
  socket.on("data", (d) => {
    buffer += d.toString();
    // a reply is complete at a line "NNN text" (no dash after the code)
    const m = /(^|\r\n)\d{3} [^\r\n]*\r\n/.exec(buffer);
    if (m && waiting) {
      const end = m.index + m[0].length;
      const reply = buffer.slice(0, end);
      buffer = buffer.slice(end);
      const w = waiting;
      waiting = null;
      w(reply);
    }
  });
  const say = (line?: string) =>
    new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no SMTP reply to ${line ?? "the greeting"}: ${buffer}`)), 10_000);
      waiting = (r) => {
        clearTimeout(t);
        resolve(r);
      };
      if (line !== undefined) socket.write(`${line}\r\n`);
    });
  return { say };
}

test("SIGTERM with an idle SMTP client and a transaction stuck on a slow receiver exits 0 in time, nothing leased", async () => {
  mx = await startFakeMx({ host: "127.0.0.5", delayMs: RECEIVER_DELAY_MS });
  dir = tempDir();
  const serve = await startServe(relayConfig(dir.path, "127.0.0.5", mx.port));
  const p = serve.proc;
  proc = p;
  const port = serve.smtpPort;

  // one message in, and its delivery stuck waiting for the receiver's reply to MAIL
  const sender = await smtpClient(port);
  expect(await sender.say()).toStartWith("220");
  expect(await sender.say("EHLO client.test")).toStartWith("250");
  expect(await sender.say("MAIL FROM:<app@example.com>")).toStartWith("250");
  expect(await sender.say("RCPT TO:<someone@dest.test>")).toStartWith("250");
  expect(await sender.say("DATA")).toStartWith("354");
  expect(await sender.say("Subject: stuck\r\n\r\nbody\r\n.")).toStartWith("250");
  expect(await sender.say("QUIT")).toStartWith("221");
  await waitFor(() => mx!.connections >= 1, 10_000, "delivery to connect");
  // let the transaction reach MAIL FROM, where the receiver sits on its reply
  await Bun.sleep(500);

  // a client that said EHLO and then nothing: SMTP's stop waits for it up to its close timeout
  const idle = await smtpClient(port);
  expect(await idle.say()).toStartWith("220");
  expect(await idle.say("EHLO idle.test")).toStartWith("250");

  const t0 = Date.now();
  p.kill("SIGTERM");
  const code = await p.exited;
  const took = Date.now() - t0;
  proc = null;
  expect({ code, took: took < 30_000, timeout: serve.out().includes('"event":"shutdown_timeout"') }).toEqual({ code: 0, took: true, timeout: false });
  // the stuck transaction was given up at the shared deadline, not waited out
  expect(serve.out()).toContain('"event":"delivery_shutdown_timeout"');

  const db = new Database(join(dir.path, "data", "outpost.db"), { readonly: true });
  try {
    const rows = db.query("SELECT status, lease_until FROM recipients").all() as { status: string; lease_until: number | null }[];
    // never delivered (the receiver had not answered), handed back for the next start: queued and not leased
    expect(rows).toEqual([{ status: "queued", lease_until: null }]);
  } finally {
    db.close();
  }
}, 45_000);
