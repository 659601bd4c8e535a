/**
 * @module events/webhook-post — one signed webhook request: the EVENT as the body, its HMAC-SHA256 signature, and
 * the POST itself with a connect deadline and a total one. node:http rather than fetch, because fetch cannot tell
 * a receiver that is slow to connect from one that is slow to answer.
 */
import { createHmac } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { EventJson } from "./query.ts";

export interface SignedRequest {
  /** the exact bytes signed and sent */
  body: string;
  headers: Record<string, string>;
}

/** `sha256=HEX`: HMAC-SHA256 of the raw body with the hook's secret. */
export function signature(secret: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/**
 * The body is signed alone; the timestamp travels beside it (unsigned), and receivers check its age and dedupe by
 * `X-Outpost-Event-Id` (an old body replayed carries an event id already seen).
 */
export function signRequest(secret: string, event: EventJson, nowMs: number): SignedRequest {
  const body = JSON.stringify(event);
  return {
    body,
    headers: {
      "content-type": "application/json",
      "user-agent": "outpost-webhook",
      "x-outpost-signature": signature(secret, body),
      "x-outpost-timestamp": String(Math.floor(nowMs / 1000)),
      "x-outpost-event-id": event.id,
    },
  };
}

export interface PostTimeouts {
  /** ms to establish the TCP connection */
  connectMs: number;
  /** ms for the whole exchange, connection and response body included */
  totalMs: number;
}

export const WEBHOOK_TIMEOUTS: PostTimeouts = { connectMs: 5_000, totalMs: 15_000 };

/** What came back: a status (any, 3xx included: redirects are not followed) or why none did. */
export type PostResult = { status: number; body: string } | { status: null; error: string };

/** the most of a response body kept (for `webhook test` and the last error); the rest is not read */
const BODY_LIMIT = 4096;

/** `signal`: abandons the request (a shutdown), which then fails with "stopped". */
export function postWebhook(url: string, req: SignedRequest, timeouts: PostTimeouts = WEBHOOK_TIMEOUTS, signal?: AbortSignal): Promise<PostResult> {
  return new Promise((resolve) => {
    let done = false;
    const timers: ReturnType<typeof setTimeout>[] = [];
    const finish = (result: PostResult) => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      resolve(result);
    };
    const client = url.startsWith("https:") ? https : http;
    const request = client.request(url, {
      method: "POST",
      headers: { ...req.headers, "content-length": String(Buffer.byteLength(req.body)) },
    });
    const fail = (error: string) => {
      finish({ status: null, error });
      request.destroy();
    };
    if (signal?.aborted) return fail("stopped");
    signal?.addEventListener("abort", () => fail("stopped"), { once: true });
    timers.push(setTimeout(() => fail(`no connection within ${timeouts.connectMs / 1000} s`), timeouts.connectMs));
    timers.push(setTimeout(() => fail(`no complete answer within ${timeouts.totalMs / 1000} s`), timeouts.totalMs));
    request.on("socket", (socket) => {
      // a kept-alive socket is connected already
      if (!socket.connecting) clearTimeout(timers[0]);
      else socket.once("connect", () => clearTimeout(timers[0]));
    });
    request.on("error", (e) => fail(e.message));
    request.on("response", (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const settle = () => finish({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
      res.on("data", (chunk: Buffer) => {
        if (size < BODY_LIMIT) chunks.push(chunk.subarray(0, BODY_LIMIT - size));
        size += chunk.length;
        // enough to show; the status is what counts, so a large or endless body is not waited for
        if (size >= BODY_LIMIT) {
          settle();
          request.destroy();
        }
      });
      res.on("end", settle);
      res.on("error", (e) => fail(e.message));
    });
    request.end(req.body);
  });
}

/** A one-line account of a failed POST, for the outbox's last error and the log. */
export function describeFailure(result: PostResult): string {
  if (result.status === null) return result.error;
  const text = result.body.replace(/\s+/g, " ").trim().slice(0, 200);
  const redirect = result.status >= 300 && result.status < 400 ? " (redirects are not followed)" : "";
  return `HTTP ${result.status}${redirect}${text ? `: ${text}` : ""}`;
}
