/**
 * @module test/helpers/dns-server — a tiny authoritative DNS server on UDP loopback, fed from a zones map.
 *
 * Why hand-written and not dnsmasq: starting dnsmasq costs a process and a config file per test, and it cannot
 * be told to answer SERVFAIL or to stay silent for one name. This one starts in a millisecond, answers exactly
 * what a test scripts, and counts the queries it got (to check caching).
 *
 *   const dns = await startDnsServer({
 *     "example.test": { mx: [{ preference: 10, exchange: "mx1.example.test" }] },
 *     "mx1.example.test": { a: ["127.0.0.2"] },
 *     "broken.test": { servfail: true },
 *     "null.test": { mx: [{ preference: 0, exchange: "." }] },
 *   });
 *   createResolver([{ host: "127.0.0.1", port: dns.port }]);   // … and `await dns.stop()` in afterAll
 *
 * Rules: a name in the map answers its records (NOERROR with no answer when it has none of the asked type:
 * "NODATA"); a name not in the map is NXDOMAIN; `servfail` answers SERVFAIL to every query for the name;
 * `silent` never answers (the resolver times out). MX, A, AAAA and TXT are answered; anything else is NODATA.
 * A TXT record is one string (cut into 255-octet character-strings, as a zone file would need) or an array
 * of its character-strings as published.
 * `zones` stays mutable: tests may change it between queries.
 */
import { createSocket, type Socket } from "node:dgram";
import { isIPv4, isIPv6 } from "node:net";

export interface FakeZone {
  mx?: { preference: number; exchange: string }[];
  a?: string[];
  aaaa?: string[];
  txt?: (string | string[])[];
  servfail?: boolean;
  silent?: boolean;
}

export interface FakeDns {
  host: string;
  port: number;
  zones: Record<string, FakeZone>;
  /** every question seen, as "name TYPE" (lower-case name) */
  queries: string[];
  stop(): Promise<void>;
}

const TYPE = { A: 1, MX: 15, TXT: 16, AAAA: 28 } as const;
const TYPE_NAME: Record<number, string> = { 1: "A", 15: "MX", 16: "TXT", 28: "AAAA" };
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 } as const;

export async function startDnsServer(zones: Record<string, FakeZone>, host = "127.0.0.1"): Promise<FakeDns> {
  const socket = createSocket(isIPv6(host) ? "udp6" : "udp4");
  const server: FakeDns = { host, port: 0, zones, queries: [], stop: () => closeSocket(socket) };
  socket.on("message", (msg, peer) => {
    const reply = answer(msg, server);
    if (reply) socket.send(reply, peer.port, peer.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, host, () => resolve());
  });
  server.port = socket.address().port;
  return server;
}

function closeSocket(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.close(() => resolve()));
}

interface Question {
  id: number;
  flags: number;
  name: string;
  type: number;
  /** the question section's bytes, echoed in the reply */
  raw: Buffer;
}

function parseQuestion(msg: Buffer): Question | null {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return null;
  const labels: string[] = [];
  let off = 12;
  while (off < msg.length) {
    const len = msg[off]!;
    if (len === 0) break;
    if (len > 63) return null; // no compression in questions
    labels.push(msg.subarray(off + 1, off + 1 + len).toString("latin1"));
    off += 1 + len;
  }
  const end = off + 5; // zero byte, type, class
  if (end > msg.length) return null;
  return {
    id: msg.readUInt16BE(0),
    flags: msg.readUInt16BE(2),
    name: labels.join(".").toLowerCase(),
    type: msg.readUInt16BE(off + 1),
    raw: msg.subarray(12, end),
  };
}

function answer(msg: Buffer, server: FakeDns): Buffer | null {
  const q = parseQuestion(msg);
  if (!q) return null;
  server.queries.push(`${q.name} ${TYPE_NAME[q.type] ?? q.type}`);
  const zone = Object.hasOwn(server.zones, q.name) ? server.zones[q.name] : undefined;
  if (zone?.silent) return null;
  if (!zone) return reply(q, RCODE.NXDOMAIN, []);
  if (zone.servfail) return reply(q, RCODE.SERVFAIL, []);
  return reply(q, RCODE.NOERROR, records(q.type, zone));
}

function records(type: number, zone: FakeZone): { type: number; data: Buffer }[] {
  if (type === TYPE.MX) {
    return (zone.mx ?? []).map((mx) => {
      const pref = Buffer.alloc(2);
      pref.writeUInt16BE(mx.preference);
      return { type, data: Buffer.concat([pref, encodeName(mx.exchange)]) };
    });
  }
  if (type === TYPE.A) return (zone.a ?? []).map((ip) => ({ type, data: ipv4(ip) }));
  if (type === TYPE.AAAA) return (zone.aaaa ?? []).map((ip) => ({ type, data: ipv6(ip) }));
  if (type === TYPE.TXT) return (zone.txt ?? []).map((record) => ({ type, data: txtData(record) }));
  return [];
}

/** RFC 1035 §3.3.14: one or more <character-string>s, each a length octet and at most 255 octets. */
function txtData(record: string | string[]): Buffer {
  const strings = typeof record === "string" ? chunks(Buffer.from(record, "utf8"), 255) : record.map((s) => Buffer.from(s, "utf8"));
  return Buffer.concat(strings.flatMap((s) => [Buffer.from([s.length]), s]));
}

function chunks(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < bytes.length; off += size) out.push(bytes.subarray(off, off + size));
  return out.length > 0 ? out : [Buffer.alloc(0)];
}

function reply(q: Question, rcode: number, answers: { type: number; data: Buffer }[]): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  // QR, AA, RD copied from the query, RA; then the rcode
  header.writeUInt16BE(0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(answers.length, 6);
  const rrs = answers.map((rr) => {
    const fixed = Buffer.alloc(12);
    fixed.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    fixed.writeUInt16BE(rr.type, 2);
    fixed.writeUInt16BE(1, 4); // IN
    fixed.writeUInt32BE(60, 6);
    fixed.writeUInt16BE(rr.data.length, 10);
    return Buffer.concat([fixed, rr.data]);
  });
  return Buffer.concat([header, q.raw, ...rrs]);
}

function encodeName(name: string): Buffer {
  const labels = name.replace(/\.$/, "").split(".").filter((l) => l.length > 0);
  const parts = labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, "latin1")]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

function ipv4(ip: string): Buffer {
  if (!isIPv4(ip)) throw new Error(`fake DNS: not an IPv4 address: ${ip}`);
  return Buffer.from(ip.split(".").map(Number));
}

function ipv6(ip: string): Buffer {
  if (!isIPv6(ip)) throw new Error(`fake DNS: not an IPv6 address: ${ip}`);
  const [head = "", tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = ip.includes("::") && tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
