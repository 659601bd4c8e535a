import { afterEach, describe, expect, test } from "bun:test";
import { newMessageId, newRecipientId } from "../mail/ids.ts";
import { silentLogger } from "../observe/log.ts";
import { startFakeMx, type FakeMx, type FakeMxScript } from "../../test/helpers/fake-mx.ts";
import { SmtpTransport, type SmtpTransportOptions } from "./transport.ts";
import { ConnectFailure, type Destination, type OutboundMessage } from "./types.ts";

const servers: FakeMx[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function mx(host: string, script: FakeMxScript = {}): Promise<FakeMx> {
  const s = await startFakeMx({ host, ...script });
  servers.push(s);
  return s;
}

/** MX host names used in tests map to loopback addresses. */
const HOSTS: Record<string, string[]> = {
  "mx1.x.test": ["127.0.0.2"],
  "mx2.x.test": ["127.0.0.3"],
  "mx3.x.test": ["127.0.0.4"],
};

function transport(port: number, opts: Partial<SmtpTransportOptions> = {}): SmtpTransport {
  return new SmtpTransport({
    hostname: "outpost.test",
    tls: "opportunistic",
    log: silentLogger,
    timeouts: { connectMs: 2000, greetingMs: 2000, socketMs: 3000, quitMs: 500 },
    lookup: async (h) => HOSTS[h] ?? Promise.reject(new Error(`unknown host ${h}`)),
    connectPort: port,
    ...opts,
  });
}

function dest(hosts: string[], extra: Partial<Destination> = {}): Destination {
  return { key: hosts.join(","), hosts: hosts.map((host, i) => ({ host, port: 25, preference: i * 10 })), tls: "opportunistic", static: false, ...extra };
}

function message(to: string[], body = "Subject: hi\r\n\r\nhello\r\n", from = "sender@outpost.test"): OutboundMessage {
  return {
    messageId: newMessageId(),
    envelopeFrom: from,
    recipients: to.map((address) => ({ id: newRecipientId(), address })),
    body: Buffer.from(body),
  };
}

describe("SmtpTransport", () => {
  test("delivers one message to all recipients in one transaction and reports each one", async () => {
    const s = await mx("127.0.0.2");
    const conn = await transport(s.port).connect(dest(["mx1.x.test"]));
    const msg = message(["a@x.test", "b@x.test"]);
    const results = await conn.send(msg);
    await conn.close();
    expect(results.map((r) => [r.recipientId, r.outcome, r.code, r.mx])).toEqual(
      msg.recipients.map((r) => [r.id, "delivered", 250, "mx1.x.test"]),
    );
    expect(s.messages).toHaveLength(1);
    expect(s.messages[0]!.to).toEqual(["a@x.test", "b@x.test"]);
    expect(s.messages[0]!.from).toBe("sender@outpost.test");
    expect(s.messages[0]!.helo).toBe("outpost.test");
  });
});
