/**
 * @module delivery/own-addresses — which address:port pairs reach outpost's own SMTP listeners, so that delivery
 * never hands mail for a remote domain back to itself (Postfix: "mail for DOMAIN loops back to myself").
 *
 * A listener bound to one address owns that address on its port. A wildcard listener (0.0.0.0 or ::) owns every
 * address of every local interface on its port, and all of 127.0.0.0/8 and ::1 (Linux answers the whole of
 * 127/8 on lo). The interfaces are read at each check, not once: addresses come and go (DHCP, containers).
 */
import { networkInterfaces } from "node:os";
import { cidrContains, isLoopback, parseCidr } from "../config/units.ts";
import type { Cidr } from "../config/schema.ts";

/** A bound listener: its address as the socket reports it ("0.0.0.0" or "::" for a wildcard) and its real port. */
export interface Listener {
  ip: string;
  port: number;
}

/** Would connecting to ip:port reach one of our own listeners? */
export type OwnAddress = (ip: string, port: number) => boolean;

const WILDCARDS = [parseCidr("0.0.0.0/32"), parseCidr("::/128")];

export function ownAddresses(listeners: readonly Listener[], interfaces: () => string[] = localAddresses): OwnAddress {
  const exact: { net: Cidr; port: number }[] = [];
  const wildcardPorts = new Set<number>();
  for (const l of listeners) {
    const net = parseCidr(l.ip);
    if (WILDCARDS.some((w) => w.family === net.family && w.address === net.address)) wildcardPorts.add(l.port);
    else exact.push({ net, port: l.port });
  }
  return (ip, port) => {
    // the same matching as trusted_networks: IPv6 spellings and IPv4-mapped addresses ("::ffff:127.0.0.1") alike
    if (exact.some((e) => e.port === port && cidrContains(e.net, ip))) return true;
    if (!wildcardPorts.has(port)) return false;
    return isLoopback(ip) || interfaces().some((a) => cidrContains(parseCidr(a), ip));
  };
}

/** Every address of every local interface (link-local ones without their zone: no MX points there). */
function localAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address.replace(/%.*$/, "")));
}
