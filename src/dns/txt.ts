/**
 * @module dns/txt — TXT questions over UDP (EDNS0: answers up to 4096 octets), and over TCP when the answer comes
 * back truncated, encoded and decoded by dns-packet.
 *
 * Why not node:dns: under Bun (checked on 1.4.4) `resolveTxt` returns every <character-string> of a TXT record as
 * a record of its own, so a record longer than 255 octets — any 2048-bit DKIM key, a long SPF record — comes back
 * in pieces that cannot be told from separate records. RFC 7208 §3.3 and RFC 6376 §3.6.2.2 join the strings of
 * one record; this client keeps each record's strings together, as Node does: one string[] per record.
 */
import { getServers } from "node:dns";
import { createSocket } from "node:dgram";
import { connect, isIP } from "node:net";
import * as packet from "dns-packet";
import type { ListenAddress } from "../config/schema.ts";
import { DEFAULT_TIMEOUT_MS, DEFAULT_TRIES, DnsError, type ResolverOptions } from "./resolver.ts";

/** One string[] per record, its character-strings in order (node:dns's `resolveTxt` shape). */
export type TxtRecords = string[][];

/** Asks `servers` (`dns.servers`), or the system's name servers when the list is empty. */
export function txtResolver(servers: readonly ListenAddress[], opts: ResolverOptions = {}): (name: string) => Promise<TxtRecords> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const tries = opts.tries ?? DEFAULT_TRIES;
  return async (name) => {
    const list = servers.length > 0 ? servers : systemServers();
    let last: DnsError = new DnsError("temporary", "ECONNREFUSED", `${name} TXT`);
    for (let attempt = 0; attempt < tries; attempt++) {
      for (const server of list) {
        try {
          return answerOf(await exchange(server, name, timeoutMs), name);
        } catch (e) {
          // an answer that the name or record does not exist is final; anything else may go better elsewhere
          if (e instanceof DnsError && e.kind === "notFound") throw e;
          last = e instanceof DnsError ? e : new DnsError("temporary", "EBADRESP", `${name} TXT`);
        }
      }
    }
    throw last;
  };
}

/** node:dns's view of /etc/resolv.conf: "1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353". */
function systemServers(): ListenAddress[] {
  return getServers().map((s) => {
    const bracketed = /^\[(.+)\](?::(\d+))?$/.exec(s);
    if (bracketed) return { host: bracketed[1]!, port: Number(bracketed[2] ?? 53) };
    if (isIP(s)) return { host: s, port: 53 };
    const colon = s.lastIndexOf(":");
    return { host: s.slice(0, colon), port: Number(s.slice(colon + 1)) };
  });
}

function query(name: string): packet.Packet {
  return {
    type: "query",
    id: Math.floor(Math.random() * 65536),
    flags: packet.RECURSION_DESIRED,
    questions: [{ type: "TXT", name }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  };
}

/** One question to one server: UDP first, TCP when the UDP answer is truncated (RFC 7766). */
async function exchange(server: ListenAddress, name: string, timeoutMs: number): Promise<packet.DecodedPacket> {
  const q = query(name);
  const udp = await overUdp(server, q, timeoutMs, name);
  return udp.flag_tc ? overTcp(server, q, timeoutMs, name) : udp;
}

function overUdp(server: ListenAddress, q: packet.Packet, timeoutMs: number, name: string): Promise<packet.DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(isIP(server.host) === 6 ? "udp6" : "udp4");
    const done = (fn: () => void) => {
      clearTimeout(timer);
      socket.close();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new DnsError("temporary", "ETIMEOUT", `${name} TXT`))), timeoutMs);
    socket.on("error", (e) => done(() => reject(new DnsError("temporary", (e as NodeJS.ErrnoException).code ?? "ECONNREFUSED", `${name} TXT`))));
    socket.on("message", (msg, peer) => {
      // only the server asked, with our id, answers this question (RFC 5452 §4.1)
      if (peer.port !== server.port) return;
      const reply = decode(msg);
      if (reply && reply.id === q.id) done(() => resolve(reply));
    });
    socket.send(packet.encode(q), server.port, server.host);
  });
}

function overTcp(server: ListenAddress, q: packet.Packet, timeoutMs: number, name: string): Promise<packet.DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, server.host);
    let buf = Buffer.alloc(0);
    const done = (fn: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new DnsError("temporary", "ETIMEOUT", `${name} TXT`))), timeoutMs);
    socket.on("error", (e) => done(() => reject(new DnsError("temporary", (e as NodeJS.ErrnoException).code ?? "ECONNREFUSED", `${name} TXT`))));
    socket.on("connect", () => socket.write(packet.streamEncode(q)));
    socket.on("data", (chunk) => {
      buf = Buffer.concat([buf, Buffer.from(chunk)]);
      // a two-octet length, then the message (RFC 1035 §4.2.2)
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const reply = decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      done(() => (reply && reply.id === q.id ? resolve(reply) : reject(new DnsError("temporary", "EBADRESP", `${name} TXT`))));
    });
  });
}

function decode(msg: Buffer): packet.DecodedPacket | null {
  try {
    return packet.decode(msg);
  } catch {
    return null;
  }
}

/** The records, or node:dns's error codes: ENOTFOUND (NXDOMAIN), ENODATA (no TXT), ESERVFAIL, EREFUSED. */
function answerOf(reply: packet.DecodedPacket, name: string): TxtRecords {
  const rcode = (reply.flags ?? 0) & 0xf;
  const what = `${name} TXT`;
  if (rcode === 3) throw new DnsError("notFound", "ENOTFOUND", what);
  if (rcode === 2) throw new DnsError("temporary", "ESERVFAIL", what);
  if (rcode === 5) throw new DnsError("temporary", "EREFUSED", what);
  if (rcode !== 0) throw new DnsError("temporary", "EBADRESP", what);
  // a CNAME chain comes with the target's records: every TXT answer belongs to the name asked
  const records = (reply.answers ?? []).flatMap((a) => (a.type === "TXT" ? [strings(a.data)] : []));
  if (records.length === 0) throw new DnsError("notFound", "ENODATA", what);
  return records;
}

function strings(data: packet.TxtData): string[] {
  const parts = Array.isArray(data) ? data : [data];
  return parts.map((p) => (typeof p === "string" ? p : p.toString("utf8")));
}
