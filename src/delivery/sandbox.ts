/**
 * @module delivery/sandbox — `delivery.sandbox`: a Router and a Transport that send nothing. Every domain is its
 * own destination without a DNS lookup, and every recipient of every transaction is "delivered" with the reply
 * `sandbox` without connecting, so the rest of delivery (throttle, personalize, settle, events) runs as usual.
 */
import type { Connection, Destination, OutboundMessage, RecipientResult, RouteResult, Router, Transport } from "./types.ts";

export const SANDBOX_REPLY = "sandbox";
const HOST = "sandbox";
/** no real destination key has it: theirs are host names (no colon) or `route:` */
const KEY_PREFIX = "sandbox:";

export const sandboxRouter: Router = {
  async route(domain: string): Promise<RouteResult> {
    return {
      kind: "ok",
      destination: { key: `${KEY_PREFIX}${domain}`, hosts: [{ host: HOST, port: 0, preference: 0 }], tls: "opportunistic", static: true },
    };
  },
};

export const sandboxTransport: Transport = {
  async connect(_dest: Destination): Promise<Connection> {
    let sent = 0;
    let usable = true;
    return {
      mx: HOST,
      get sent() {
        return sent;
      },
      get usable() {
        return usable;
      },
      async send(msg: OutboundMessage): Promise<RecipientResult[]> {
        sent++;
        return msg.recipients.map((r) => ({ recipientId: r.id, outcome: "delivered", code: 250, enhanced: "2.0.0", reply: SANDBOX_REPLY }));
      },
      async close() {
        usable = false;
      },
    };
  },
};

/** The router to use: the sandbox's when `sandbox` is on. */
export function sandboxRouterIf(sandbox: boolean, real: Router): Router {
  return sandbox ? sandboxRouter : real;
}

/**
 * The transport for `dest`: a destination the sandbox router made is never dialled, and a real one never
 * sandboxed, whatever a reload has set since (the setting applies to mail routed from then on).
 */
export function transportFor(dest: Destination, real: Transport): Transport {
  return dest.key.startsWith(KEY_PREFIX) ? sandboxTransport : real;
}
