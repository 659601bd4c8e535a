/** @module test/smtp/fixture — an outpost runtime for SMTP tests, a raw SMTP socket, and bounded child processes. */
import type { X509Certificate } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { addUser } from "../../src/auth/users.ts";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { QueueInspector } from "../../src/queue/inspect.ts";
import { startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

export interface Outpost {
  rt: Runtime;
  dir: string;
  /** the first plain+STARTTLS listener's port */
  port: number;
  /** the first implicit-TLS listener's port, if any */
  tlsPort: number | undefined;
  /** the first-run admin password */
  password: string;
  /** every JSON log line written so far, parsed */
  logs: Array<Record<string, unknown>>;
  /** … and as written (what a log filter such as fail2ban sees) */
  lines: string[];
  stop(): Promise<void>;
}

export async function startOutpost(toml = ""): Promise<Outpost> {
  const d = tempDir();
  const logs: Array<Record<string, unknown>> = [];
  const lines: string[] = [];
  const log = createLogger("debug", (line) => {
    lines.push(line);
    logs.push(JSON.parse(line) as Record<string, unknown>);
  });
  const { rt, firstRun } = await startRuntime(testConfig(d.path, quiet(toml)), log);
  const addrs = rt.smtp!.addresses();
  const password = firstRun.find((l) => l.startsWith("password: "))!.slice("password: ".length);
  return {
    rt,
    dir: d.path,
    port: addrs.find((a) => a.tls === "starttls")?.port ?? 0,
    tlsPort: addrs.find((a) => a.tls === "implicit")?.port,
    password,
    logs,
    lines,
    async stop() {
      await rt.stop();
      d.cleanup();
    },
  };
}

/**
 * SMTP tests look at the queue, not at delivery: delivery runs in sandbox (no connections out, no
 * DSNs), and the HTTP listener takes a free port, unless the snippet says otherwise.
 */
function quiet(toml: string): string {
  let out = toml;
  if (!/^\s*\[delivery\]/m.test(out)) out += `\n[delivery]\nsandbox = true\n`;
  if (!/^\s*\[http\]/m.test(out)) out += `\n[http]\nlisten = "127.0.0.1:0"\n`;
  return out;
}

export async function addTestUser(o: Outpost, name: string, password: string, domains: string[] = []): Promise<void> {
  await addUser(o.rt.store.db, name, password, domains);
}

export interface MessageRow {
  id: string;
  envelope_from: string;
  subject: string;
  size: number;
  body: Uint8Array;
  source: string;
  inline_css: number;
  track_clicks: number;
  track_opens: number;
  track_bounces: number;
  user_id: number | null;
}

/** The message's row, with `body` the stored body wherever the queue keeps it (the row, or a body file). */
export function messageRow(o: Outpost, id: string): MessageRow | null {
  const row = o.rt.store.sqlite.query<MessageRow, [string]>("SELECT * FROM messages WHERE id = ?").get(id);
  return row && withBody(o, row);
}

export function messagesFrom(o: Outpost, sender: string): MessageRow[] {
  return o.rt.store.sqlite.query<MessageRow, [string]>("SELECT * FROM messages WHERE envelope_from = ? ORDER BY id").all(sender).map((r) => withBody(o, r));
}

function withBody(o: Outpost, row: MessageRow): MessageRow {
  return { ...row, body: new QueueInspector(o.rt.store.sqlite).storedMessage(row.id)! };
}

export function recipientsOf(o: Outpost, id: string): string[] {
  return o.rt.store.sqlite
    .query<{ address: string }, [string]>("SELECT address FROM recipients WHERE message_id = ? ORDER BY address")
    .all(id)
    .map((r) => r.address);
}

/** The queue id in a "250 2.0.0 Ok: queued as ID" reply. */
export function queueIdIn(text: string): string {
  const m = text.match(/queued as ([0-9a-z]+)/);
  if (!m) throw new Error(`no queue id in ${JSON.stringify(text)}`);
  return m[1]!;
}

/** Runs a command with a hard timeout; never throws on a non-zero exit. */
export async function run(cmd: string[], opts: { stdin?: string; timeoutMs?: number; env?: Record<string, string> } = {}) {
  const proc = Bun.spawn(cmd, {
    stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs ?? 20_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

export function hasCommand(name: string): boolean {
  return Bun.which(name, { PATH: `${process.env.PATH}:/usr/sbin:/sbin` }) !== null;
}

/**
 * A raw SMTP client socket: send exact bytes, read whole replies (multi-line until "NNN "),
 * upgrade to TLS after STARTTLS, and see the server close the connection.
 */
export class RawSmtp {
  private buf = "";
  private waiters: Array<() => void> = [];
  closed = false;
  private constructor(private socket: net.Socket | tls.TLSSocket) {
    this.attach(socket);
  }

  static connect(port: number, opts: { host?: string; localAddress?: string } = {}): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: opts.host ?? "127.0.0.1", localAddress: opts.localAddress }, () => resolve(new RawSmtp(s)));
      s.once("error", reject);
    });
  }

  private attach(s: net.Socket | tls.TLSSocket): void {
    s.on("data", (d: Buffer) => {
      this.buf += d.toString("latin1");
      this.wake();
    });
    s.on("close", () => {
      this.closed = true;
      this.wake();
    });
    s.on("error", () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === "string" ? Buffer.from(data, "latin1") : data);
  }

  /** The next complete reply (all its lines, CRLF-joined without the last CRLF), or throws after `ms`. */
  async reply(ms = 5000): Promise<string> {
    const until = Date.now() + ms;
    for (;;) {
      const m = this.buf.match(/^((?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n)/);
      if (m) {
        this.buf = this.buf.slice(m[1]!.length);
        return m[1]!.slice(0, -2);
      }
      if (this.closed) throw new Error(`connection closed while waiting for a reply; unread: ${JSON.stringify(this.buf)}`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`no reply within ${ms} ms; unread: ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Resolves true once the server has closed the connection (false after `ms`). */
  waitClosed(ms = 3000): Promise<boolean> {
    return waitFor(() => this.closed, ms, "the server to close the connection").then(() => true, () => false);
  }

  /** Whatever arrived that is not part of a reply read so far. */
  unread(): string {
    return this.buf;
  }

  starttls(): Promise<void> {
    return new Promise((resolve, reject) => {
      const plain = this.socket;
      plain.removeAllListeners("data");
      const secure = tls.connect({ socket: plain, rejectUnauthorized: false }, () => resolve());
      secure.once("error", reject);
      this.socket = secure;
      this.attach(secure);
    });
  }

  /** The server's certificate once the socket is TLS, else null. */
  peerCertificate(): X509Certificate | null {
    return this.socket instanceof tls.TLSSocket ? (this.socket.getPeerX509Certificate() ?? null) : null;
  }

  close(): void {
    this.socket.destroy();
  }
}
