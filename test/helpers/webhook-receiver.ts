/**
 * @module test/helpers/webhook-receiver — an HTTP receiver for outpost's webhooks on loopback: checks each request's
 * signature as docs/webhooks.md tells receivers to, records it, and answers as the test says (fail the first N,
 * be slow, never answer).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Server } from "bun";

export interface Received {
  eventId: string;
  /** the event's fields as posted */
  event: { id: string; type: string; time: string; message_id: string; recipient: string | null; details: Record<string, unknown> };
  body: string;
  /** X-Outpost-Signature is the HMAC-SHA256 of the raw body with the secret */
  signatureOk: boolean;
  /** X-Outpost-Timestamp, unix seconds */
  timestamp: number;
  headers: Headers;
  /** Date.now() when it arrived */
  at: number;
}

export interface ReceiverOptions {
  secret: string;
  /** the status for the `n`th request (0-based) — or a Promise of it (a slow receiver); default 200 */
  respond?: (r: Received, n: number) => number | Promise<number>;
  host?: string;
}

export interface Receiver {
  url: string;
  received: Received[];
  /** event ids answered 2xx */
  acknowledged: string[];
  /** requests being answered now (a slow or hanging receiver) */
  open: () => number;
  /** the most requests it was answering at once */
  maxOpen: () => number;
  stop: () => Promise<void>;
}

export function verify(secret: string, body: string, header: string | null): boolean {
  const expected = Buffer.from(`sha256=${createHmac("sha256", secret).update(body).digest("hex")}`);
  const given = Buffer.from(header ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function startReceiver(opts: ReceiverOptions): Receiver {
  const received: Received[] = [];
  const acknowledged: string[] = [];
  let open = 0;
  let maxOpen = 0;
  const server: Server<undefined> = Bun.serve({
    hostname: opts.host ?? "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const body = await req.text();
      const r: Received = {
        eventId: req.headers.get("x-outpost-event-id") ?? "",
        event: JSON.parse(body) as Received["event"],
        body,
        signatureOk: verify(opts.secret, body, req.headers.get("x-outpost-signature")),
        timestamp: Number(req.headers.get("x-outpost-timestamp")),
        headers: req.headers,
        at: Date.now(),
      };
      const n = received.push(r) - 1;
      maxOpen = Math.max(maxOpen, ++open);
      try {
        const status = opts.respond ? await opts.respond(r, n) : 200;
        if (status >= 200 && status < 300) acknowledged.push(r.eventId);
        return new Response(status >= 400 ? `failure ${n}` : "ok", { status, headers: status >= 300 && status < 400 ? { location: "http://127.0.0.1:9/" } : {} });
      } finally {
        open--;
      }
    },
  });
  return {
    url: `http://${opts.host ?? "127.0.0.1"}:${server.port}/hooks/mail`,
    received,
    acknowledged,
    open: () => open,
    maxOpen: () => maxOpen,
    stop: () => server.stop(true),
  };
}
