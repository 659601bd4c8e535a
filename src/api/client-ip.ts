/**
 * @module api/client-ip — the address an HTTP request came from: the socket's peer, or, when that peer is a
 * reverse proxy on this machine (loopback), the client it names in `X-Forwarded-For`.
 *
 * `X-Forwarded-For: client, proxy1, proxy2` is written by the proxies, each appending the address it was
 * reached from; anyone can send the header, so only hops we trust may be believed. Trusted here is loopback only
 * (a proxy such as nginx or Caddy on the same host): walking from the right, loopback entries are our proxies,
 * and the first other entry is the client. A header from a peer that is not loopback is ignored, and so is an
 * entry that is no IP address (then the peer stands).
 */
import { isIP } from "node:net";
import { isLoopback } from "../config/units.ts";

export function clientIp(peer: string | null, forwardedFor: string | null): string | null {
  if (peer === null || forwardedFor === null || !isLoopback(peer)) return peer;
  const hops = forwardedFor.split(",").map((h) => h.trim()).filter((h) => h !== "");
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!;
    if (isIP(hop) === 0) return peer;
    if (!isLoopback(hop)) return hop;
  }
  return peer;
}
