import { afterAll, beforeAll, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { createServer, type Server } from "node:net";
import * as packet from "dns-packet";
import { startDnsServer, type FakeDns } from "../../test/helpers/dns-server.ts";
import { txtResolver } from "./txt.ts";

let dns: FakeDns;
beforeAll(async () => {
  dns = await startDnsServer({
    "key.test": { txt: [`v=DKIM1; k=rsa; p=${"A".repeat(392)}`, ["part one ", "part two"]] },
    "a-only.test": { a: ["192.0.2.1"] },
    "broken.test": { servfail: true },
  });
});
afterAll(async () => {
  await dns?.stop();
});

const ask = (port: number) => txtResolver([{ host: "127.0.0.1", port }], { timeoutMs: 1000, tries: 1 });

test("a record's character-strings stay together, one string[] per record", async () => {
  const records = await ask(dns.port)("key.test");
  expect(records.map((r) => r.join(""))).toEqual([`v=DKIM1; k=rsa; p=${"A".repeat(392)}`, "part one part two"]);
  expect(records[0]!.length).toBe(2); // 411 octets: two strings
});

test("no such name is ENOTFOUND, no TXT record ENODATA, SERVFAIL ESERVFAIL: node:dns's codes", async () => {
  const codeOf = (name: string) => ask(dns.port)(name).then(() => "answered", (e: { code: string }) => e.code);
  expect(await codeOf("nx.test")).toBe("ENOTFOUND");
  expect(await codeOf("a-only.test")).toBe("ENODATA");
  expect(await codeOf("broken.test")).toBe("ESERVFAIL");
});

test("a truncated UDP answer is asked again over TCP", async () => {
  const long = "v=spf1 " + Array.from({ length: 60 }, (_, i) => `ip4:192.0.2.${i}`).join(" ") + " ~all";
  const answer = (q: packet.Packet, truncated: boolean): packet.Packet => ({
    type: "response", id: q.id, flags: truncated ? packet.TRUNCATED_RESPONSE : 0, questions: q.questions,
    answers: truncated ? [] : [{ type: "TXT", name: "big.test", ttl: 60, data: long.match(/.{1,255}/g)! }],
  });
  const udp = createSocket("udp4");
  udp.on("message", (msg, peer) => udp.send(packet.encode(answer(packet.decode(msg), true)), peer.port, peer.address));
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
  const port = udp.address().port;
  const tcp: Server = createServer((socket) => {
    // a two-octet length, then the question (RFC 1035 §4.2.2)
    socket.once("data", (data: Buffer) => socket.end(packet.streamEncode(answer(packet.decode(data.subarray(2)), false))));
  });
  await new Promise<void>((r) => tcp.listen(port, "127.0.0.1", () => r()));
  try {
    expect((await ask(port)("big.test")).map((r) => r.join(""))).toEqual([long]);
  } finally {
    udp.close();
    tcp.close();
  }
});
