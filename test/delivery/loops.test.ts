/**
 * Mail loops end, with every real part in one process: the SMTP listener, intake, the queue, the delivery loop,
 * the router (fake DNS) and the SMTP transport. Two ways a message comes back to outpost:
 * - through DNS (an MX that is outpost itself): delivery never connects, the recipient bounces 5.4.6 at once;
 * - through a static route to our own listener (on purpose): every turn adds a Received line, and intake's hop
 *   limit ends it; the DSN that bounce makes (from <>) goes round too, and ends the same way.
 */
import { describe, expect, test } from "bun:test";
import { createLogger } from "../../src/observe/log.ts";
import type { Runtime } from "../../src/runtime/start.ts";
import { startDnsServer } from "../helpers/dns-server.ts";
import { endAfterEach, freePort, startRuntime, tempDir, testConfig, waitFor } from "../helpers/harness.ts";

const own = endAfterEach();

type LogLine = Record<string, unknown> & { event: string };

/** outpost with its one SMTP listener on 127.0.0.1:`port`, relaying for loopback clients, logs kept. */
async function start(port: number, toml: string, mxPort?: number): Promise<{ rt: Runtime; logs: LogLine[] }> {
  const dir = own(tempDir());
  const logs: LogLine[] = [];
  const config = testConfig(dir.path, `[smtp]\nlisten = ["127.0.0.1:${port}"]\ntrusted_networks = ["127.0.0.0/8"]\n${toml}`);
  const rt = own((await startRuntime(config, createLogger("info", (l) => logs.push(JSON.parse(l) as LogLine)), { mxPort })).rt);
  return { rt, logs };
}

/** One message from a loopback client over SMTP, with swaks. */
async function sendWithSwaks(port: number, to: string): Promise<string> {
  const p = Bun.spawn(["swaks", "--server", `127.0.0.1:${port}`, "--from", "app@example.com", "--to", to, "--header", "Subject: round and round",
    "--body", "hello", "--hide-all", "--silent", "1"], { stdout: "pipe", stderr: "pipe" });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`swaks exited ${code}: ${err}`);
  return err;
}

function pending(r: Runtime): number {
  return r.store.sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM recipients WHERE status IN ('queued','deferred')").get()!.n;
}

/** Every message outpost ever accepted, oldest first, with its one recipient's fate. */
function history(r: Runtime) {
  return r.store.sqlite
    .query<{ source: string; envelope_from: string; address: string; status: string; last_reply: string | null; body: Uint8Array }, []>(
      `SELECT m.source, m.envelope_from, r.address, r.status, r.last_reply, m.body
         FROM messages m JOIN recipients r ON r.message_id = m.id ORDER BY m.created_at, m.rowid`,
    )
    .all()
    // hops: the Received fields of the stored header block (the DSN's returned headers are in its body)
    .map((m) => ({ ...m, hops: (Buffer.from(m.body).toString("latin1").split("\r\n\r\n")[0]!.match(/^Received:/gim) ?? []).length }));
}

describe("mail loops end", () => {
  test("an MX that is outpost itself: the recipient bounces 5.4.6 and no message is handed to ourselves", async () => {
    const dns = own(await startDnsServer({
      "loop.test": { mx: [{ preference: 10, exchange: "mx.loop.test" }] },
      "mx.loop.test": { a: ["127.0.0.1"] },
    }));
    const port = await freePort();
    // MX hosts are dialled on our own SMTP port: were the guard missing, we would relay to ourselves (trusted)
    const { rt, logs } = await start(port, `[dns]\nservers = ["127.0.0.1:${dns.port}"]\n`, port);
    await sendWithSwaks(port, "someone@loop.test");
    await waitFor(() => history(rt).find((m) => m.address === "someone@loop.test")?.status === "bounced", 10_000, "the bounce");
    const [original, ...rest] = history(rt);
    expect(original).toMatchObject({ source: "smtp", status: "bounced", last_reply: "mail for loop.test loops back to myself", hops: 1 });
    // zero extra hops: the only other message is the DSN we made (to app@example.com, which has no DNS: it bounces)
    expect(rest.map((m) => [m.source, m.envelope_from, m.address])).toEqual([["dsn", "", "app@example.com"]]);
    expect(Buffer.from(rest[0]!.body).toString()).toMatch(/^Status: 5\.4\.6\r$/m);
    const delivery = logs.filter((l) => l.event === "delivery" && l.recipient === "someone@loop.test");
    expect(delivery).toEqual([expect.objectContaining({ status: "bounced", dsn: "5.4.6", reply: "mail for loop.test loops back to myself", mx: "mx.loop.test" })]);
    expect(logs.filter((l) => l.event === "delivery_loops_back")).toHaveLength(1);
    expect(logs.filter((l) => l.event === "smtp_message")).toHaveLength(1);
  }, 20_000);

  test("a static route back to our own listener loops on purpose until the hop limit, and the DSN's loop ends too", async () => {
    const maxHops = 5;
    const port = await freePort();
    const { rt, logs } = await start(port, `max_hops = ${maxHops}\n[[delivery.route]]\ndomain = "*"\nhost = "127.0.0.1"\nport = ${port}\n`);
    await sendWithSwaks(port, "someone@far.test");
    // the loop is over when nothing is left to send: a loop without end never gets here
    await waitFor(() => pending(rt) === 0 && history(rt).length > 1, 30_000, "the loops to end");
    const all = history(rt);
    const chain = all.filter((m) => m.address === "someone@far.test");
    const dsns = all.filter((m) => m.address === "app@example.com");
    expect(chain.length + dsns.length).toBe(all.length);
    // the message went round max_hops times: one more Received line each turn, then refused at max_hops + 1
    expect(chain.map((m) => m.hops)).toEqual([1, 2, 3, 4, 5]);
    expect(chain.slice(0, -1).every((m) => m.status === "delivered")).toBe(true);
    expect(chain.at(-1)).toMatchObject({ status: "bounced", last_reply: `554 5.4.6 Too many hops (${maxHops + 1} Received header fields, at most ${maxHops})` });
    // the DSN (from <>, made here with no Received line) goes round as well, is refused the same way, and makes no DSN
    expect(dsns.map((m) => [m.source, m.envelope_from, m.hops])).toEqual([["dsn", "", 0], ...[1, 2, 3, 4, 5].map((h) => ["smtp", "", h])]);
    expect(dsns.at(-1)).toMatchObject({ status: "bounced", last_reply: expect.stringMatching(/^554 5\.4\.6 Too many hops/) });
    // bounded: at most max_hops + 1 messages per chain, and two chains
    expect(all.length).toBeLessThanOrEqual(2 * (maxHops + 1));
    expect(logs.filter((l) => l.event === "smtp_message" && String(l.result).startsWith("554 5.4.6"))).toHaveLength(2);
    expect(logs.filter((l) => l.event === "delivery_loops_back")).toHaveLength(0);
  }, 40_000);
});
