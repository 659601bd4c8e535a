/**
 * @module config/units — pure parsers for the value forms of outpost.toml (durations, sizes,
 * rates, listen addresses, CIDRs, host names, URLs). Each throws a plain Error with a short
 * message; the loader adds the file and the key.
 */
import { isIP, isIPv4 } from "node:net";
import type { Cidr, ListenAddress, Rate } from "./schema.ts";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const DURATION_UNITS: Record<string, number> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR, d: DAY };

const DURATION = /^(?:\d+(?:ms|s|m|h|d))+$/;

/** "30s", "5m", "2h", "5d", "250ms", or a sum such as "1h30m" → milliseconds. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (!DURATION.test(trimmed)) throw new Error('expected a duration like "30s", "5m", "2h", "5d"');
  let total = 0;
  for (const [, count, unit = ""] of trimmed.matchAll(/(\d+)(ms|s|m|h|d)/g)) {
    total += Number(count) * (DURATION_UNITS[unit] ?? 0);
  }
  return checkSafe(total, "duration");
}

const SIZE_UNITS: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
const SIZE_HINT = 'expected a size like "512KB", "25MB", "1GB" or a number of bytes';

/** "512KB", "25MB", "1GB" (powers of 1024), or a plain number of bytes (as a number or a string). */
export function parseSize(value: string | number): number {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(SIZE_HINT);
    return value;
  }
  const match = value.trim().match(/^(\d+)\s*([a-z]*)$/i);
  const factor = match ? SIZE_UNITS[(match[2] || "B").toUpperCase()] : undefined;
  if (!match || factor === undefined) throw new Error(SIZE_HINT);
  return checkSafe(Number(match[1]) * factor, "size");
}

const RATE_UNITS: Record<string, number> = {
  s: SECOND, sec: SECOND, second: SECOND,
  m: MINUTE, min: MINUTE, minute: MINUTE,
  h: HOUR, hour: HOUR,
  d: DAY, day: DAY,
};

/** "10/s", "600/min", "5000/h" → `count` events per `perMs` milliseconds. */
export function parseRate(text: string): Rate {
  const match = text.trim().match(/^(\d+)\s*\/\s*([a-z]+)$/);
  const perMs = match ? RATE_UNITS[match[2] ?? ""] : undefined;
  const count = Number(match?.[1]);
  if (!match || perMs === undefined || !Number.isSafeInteger(count) || count < 1) {
    throw new Error('expected a rate like "10/s", "600/min", "5000/h"');
  }
  return { count, perMs };
}

const LISTEN_HINT = 'expected an address like "127.0.0.1:2525" or "[::1]:2525"';

/** "127.0.0.1:2525", "[::1]:2525", "localhost:25" → {host, port}; IPv6 hosts come back unbracketed. */
export function parseListen(text: string): ListenAddress {
  const match = text.trim().match(/^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/);
  const host = match?.[1] ?? match?.[2] ?? "";
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new Error(LISTEN_HINT);
  // A bracketed host must be IPv6; a bare one an IPv4 literal or a host name.
  const valid = match[1] !== undefined ? isIP(host) === 6 : isIPv4(host) || isHostname(host);
  if (!valid) throw new Error(LISTEN_HINT);
  return { host, port };
}

/** A DNS server: an IP literal, optionally with a port ("127.0.0.1:5353", "[::1]:53"); default port 53. */
export function parseDnsServer(text: string): ListenAddress {
  const bare = text.trim();
  if (isIP(bare)) return { host: bare, port: 53 };
  const hint = 'expected an IP address with an optional port like "127.0.0.1:5353"';
  let address: ListenAddress;
  try {
    address = parseListen(bare);
  } catch {
    throw new Error(hint);
  }
  if (!isIP(address.host) || address.port === 0) throw new Error(hint);
  return address;
}

/** "10.0.0.0/8", "::1/128", or a bare address (a single host); host bits are cleared. */
export function parseCidr(text: string): Cidr {
  const [address = "", prefixText, extra] = text.trim().split("/");
  const ip = ipToBigInt(address);
  const bits = ip?.family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? bits : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!ip || extra !== undefined || !(prefix >= 0 && prefix <= bits)) {
    throw new Error('expected an address or network like "10.0.0.0/8", "::1/128" or "127.0.0.1"');
  }
  const network = prefix === 0 ? 0n : (ip.value >> BigInt(bits - prefix)) << BigInt(bits - prefix);
  return { family: ip.family, address: formatIp(ip.family, network), prefix };
}

/** Is `ip` inside `cidr`? IPv4 and IPv4-mapped IPv6 ("::ffff:127.0.0.1") match each other. */
export function cidrContains(cidr: Cidr, ip: string): boolean {
  // every SMTP connection asks this several times (trusted_networks, loopback): plain IPv4 without BigInt
  const v4 = cidr.family === 4 ? ipv4Value(ip) : null;
  if (v4 !== null) {
    const shift = 32 - cidr.prefix;
    return shift === 32 || v4 >>> shift === ipv4Value(cidr.address)! >>> shift; // a Cidr's address is one parseCidr formatted
  }
  const parsed = ipToBigInt(ip.replace(/%.*$/, ""));
  const network = ipToBigInt(cidr.address);
  if (!parsed || !network) return false;
  const value = inFamily(parsed, cidr.family);
  if (value === null) return false;
  const shift = BigInt((cidr.family === 4 ? 32 : 128) - cidr.prefix);
  return value >> shift === network.value >> shift;
}

/**
 * The client a per-client limit counts: an IPv4 address as itself (also written IPv4-mapped, "::ffff:192.0.2.7"),
 * an IPv6 address by its /64 ("2001:db8:1:2::/64"), the smallest network a site is given, so one host cannot
 * pass a limit by cycling through the 2^64 addresses it has. Anything else is returned as given.
 */
export function clientKey(ip: string): string {
  if (ipv4Value(ip) !== null) return ip; // already as formatIp would write it
  const parsed = ipToBigInt(ip.replace(/%.*$/, ""));
  if (!parsed) return ip;
  const v4 = inFamily(parsed, 4);
  if (v4 !== null) return formatIp(4, v4);
  return `${formatIp(6, (parsed.value >> 64n) << 64n)}/64`;
}

/** The highest address of a network ("203.0.113.0/28" → "203.0.113.15"). */
export function lastAddress(cidr: Cidr): string {
  const network = ipToBigInt(cidr.address)!; // a Cidr's address is one parseCidr formatted
  const hostBits = BigInt((cidr.family === 4 ? 32 : 128) - cidr.prefix);
  return formatIp(cidr.family, network.value | ((1n << hostBits) - 1n));
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;
const DNS_LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/i;

/** A host name ("mail.example.com", "localhost"); `underscores` also admits DNS-only names ("_spf.example.com"). */
export function isHostname(text: string, underscores = false): boolean {
  if (text.length === 0 || text.length > 253) return false;
  const label = underscores ? DNS_LABEL : LABEL;
  const labels = text.split(".");
  // An all-numeric last label would make "999.1.1.1" a host name instead of a bad IP address.
  return labels.every((part) => label.test(part)) && !/^\d+$/.test(labels[labels.length - 1] ?? "");
}

/** A domain name, lower-cased. */
export function parseDomain(text: string): string {
  if (!isHostname(text, true)) throw new Error('expected a domain name like "example.com"');
  return text.toLowerCase();
}

/** An exact domain, "*.example.com", or "*", lower-cased. */
export function parseDomainPattern(text: string): string {
  const rest = text.startsWith("*.") ? text.slice(2) : text;
  if (text !== "*" && !isHostname(rest, true)) {
    throw new Error('expected a domain, a pattern like "*.example.com", or "*"');
  }
  return text.toLowerCase();
}

/** An outbound host: a host name or an IP literal. */
export function parseHost(text: string): string {
  if (!isIP(text) && !isHostname(text)) throw new Error('expected a host name or an IP address');
  return text.toLowerCase();
}

/** An absolute http(s) URL, without a trailing slash so paths can be appended. */
export function parseHttpUrl(text: string): string {
  const url = URL.parse(text);
  if (url?.protocol !== "http:" && url?.protocol !== "https:") {
    throw new Error('expected an http(s) URL like "https://mail.example.com"');
  }
  return url.href.replace(/\/+$/, "");
}

function checkSafe(value: number, what: string): number {
  if (!Number.isSafeInteger(value)) throw new Error(`${what} is too large`);
  return value;
}

interface IpValue {
  family: 4 | 6;
  value: bigint;
}

function ipToBigInt(text: string): IpValue | null {
  // isIP accepts a zone ("fe80::1%eth0"), which names an interface, not part of the address.
  const family = text.includes("%") ? 0 : isIP(text);
  if (family === 4) return { family, value: octetsToBigInt(text) };
  if (family === 6) return { family, value: ipv6ToBigInt(text) };
  return null;
}

/**
 * A dotted-quad IPv4 address as isIPv4 accepts it (four decimal octets up to 255, no leading zeros), as an unsigned
 * 32-bit number; null for anything else, which the BigInt path then handles.
 */
function ipv4Value(text: string): number | null {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return null; // a leading zero
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return null;
    } else if (c === 46 && digits > 0 && dots < 3) {
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else return null;
  }
  return dots === 3 && digits > 0 ? value * 256 + octet : null;
}

function octetsToBigInt(text: string): bigint {
  return text.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
}

function ipv6ToBigInt(text: string): bigint {
  const [head = "", tail] = text.split("::");
  const groups = (part: string): bigint[] => (part === "" ? [] : part.split(":").flatMap(groupValues));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const zeros: bigint[] = Array(8 - left.length - right.length).fill(0n);
  return [...left, ...zeros, ...right].reduce((acc, group) => (acc << 16n) | group, 0n);
}

/** One hex group, or the two groups an embedded IPv4 tail ("::ffff:1.2.3.4") stands for. */
function groupValues(group: string): bigint[] {
  if (!group.includes(".")) return [BigInt(`0x${group}`)];
  const v4 = octetsToBigInt(group);
  return [v4 >> 16n, v4 & 0xffffn];
}

/** Brings an address into the CIDR's family, through the IPv4-mapped range ::ffff:0:0/96. */
function inFamily(ip: IpValue, family: 4 | 6): bigint | null {
  if (ip.family === family) return ip.value;
  if (family === 6) return (0xffffn << 32n) | ip.value;
  return ip.value >> 32n === 0xffffn ? ip.value & 0xffffffffn : null;
}

function formatIp(family: 4 | 6, value: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
  const groups = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((shift) => ((value >> shift) & 0xffffn).toString(16));
  return compressIpv6(groups);
}

/** RFC 5952: the longest run of two or more zero groups becomes "::". */
function compressIpv6(groups: string[]): string {
  let best = { start: -1, length: 0 };
  for (let i = 0; i < groups.length; ) {
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > best.length) best = { start: i, length: j - i };
    i = Math.max(j, i + 1);
  }
  if (best.length < 2) return groups.join(":");
  const head = groups.slice(0, best.start).join(":");
  const tail = groups.slice(best.start + best.length).join(":");
  return `${head}::${tail}`;
}

const LOOPBACK: Cidr[] = [parseCidr("127.0.0.0/8"), parseCidr("::1/128")];

/** 127.0.0.0/8 (also IPv4-mapped, "::ffff:127.0.0.1") and ::1: the same matching as trusted_networks. */
export function isLoopback(ip: string): boolean {
  return LOOPBACK.some((c) => cidrContains(c, ip));
}
