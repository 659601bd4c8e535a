/**
 * @module api/tracking — the links in tracked mail, no API key needed: `GET /t/c/{token}` (302 to the link's
 * target, `clicked`), `GET /t/o/{token}` (a 1×1 GIF, `opened`), and the one-click unsubscribe URL `/t/u/{token}`
 * (RFC 8058: a POST unsubscribes; a GET only shows a page with one button, since link scanners follow GETs).
 *
 * A token we did not sign is a 404 for a click or an unsubscribe, never a redirect; the pixel is a GIF whatever
 * the token (no broken image), recorded only when valid. A HEAD (Bun answers it with the GET route) gets the same
 * answer and records nothing: it is a program checking the link, not a reader following it. A failure to record is logged and the visitor still
 * gets the redirect or the pixel; only an unsubscribe, which must not be lost, answers 503 then.
 */
import { Elysia, t } from "elysia";
import { ApiError } from "../mail/errors.ts";
import type { Client } from "../tracking/record.ts";
import { redirectTarget } from "../tracking/token.ts";
import { clientIp } from "./client-ip.ts";
import type { ApiContext } from "./context.ts";
import { ErrorBody } from "./model.ts";

/** A transparent 1×1 GIF89a (43 bytes). */
export const PIXEL_GIF = Buffer.from("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==", "base64");

/** A one-click POST carries `List-Unsubscribe=One-Click` (RFC 8058 §3.2): a few dozen bytes. */
const MAX_UNSUBSCRIBE_BODY = 4096;

const Token = t.Object({ token: t.String({ description: "the signed token from the link" }) });

interface Server {
  requestIP(request: Request): { address: string } | null;
}

function clientOf(request: Request, server: Server | null): Client {
  const peer = server?.requestIP(request)?.address ?? null;
  return { ip: clientIp(peer, request.headers.get("x-forwarded-for")), userAgent: request.headers.get("user-agent") };
}

const notFound = (what: string) => new ApiError(404, "not_found", `no such ${what}`, "token");

export function trackingRoutes(ctx: ApiContext) {
  /** Records through `fn`; a store failure is logged, not shown to the visitor. */
  const bestEffort = (kind: string, fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      ctx.log.error("tracking_record_failed", { kind, error: e });
    }
  };
  return new Elysia()
    .get(
      "/t/c/:token",
      ({ params, request, server }) => {
        const hit = ctx.tokens.verifyClick(params.token);
        // checked again though signed: no token, however made, can send a browser to javascript:, data: or //host
        const target = hit && redirectTarget(hit.url);
        if (!hit || !target) {
          ctx.counters.forgedToken("click");
          throw notFound("link");
        }
        if (request.method === "GET") {
          bestEffort("click", () => {
            if (ctx.tracking.click(hit, clientOf(request, server))) ctx.counters.trackingEvent("clicked");
          });
        }
        return new Response(null, { status: 302, headers: { location: target, "cache-control": "no-store" } });
      },
      {
        params: Token,
        response: { 404: ErrorBody },
        detail: { tags: ["tracking"], summary: "A tracked link: 302 to its target, recording a click", security: [] },
      },
    )
    .get(
      "/t/o/:token",
      ({ params, request, server }) => {
        const hit = ctx.tokens.verifyOpen(params.token);
        if (!hit) ctx.counters.forgedToken("open");
        else if (request.method === "GET") {
          bestEffort("open", () => {
            if (ctx.tracking.open(hit, clientOf(request, server))) ctx.counters.trackingEvent("opened");
          });
        }
        return new Response(PIXEL_GIF, { headers: { "content-type": "image/gif", "cache-control": "no-store" } });
      },
      {
        params: Token,
        detail: { tags: ["tracking"], summary: "The open-tracking pixel: a 1×1 GIF, recording an open when the token is valid", security: [] },
      },
    )
    .get(
      "/t/u/:token",
      ({ params }) => {
        const rec = unsubscribeRecipient(ctx, params.token);
        return page(200, confirmPage(params.token, rec.address));
      },
      {
        params: Token,
        response: { 404: ErrorBody },
        detail: {
          tags: ["tracking"],
          summary: "The unsubscribe page: one button that POSTs to the same URL (a GET changes nothing)",
          security: [],
        },
      },
    )
    .post(
      "/t/u/:token",
      async ({ params, request, server }) => {
        const hit = ctx.tokens.verifyUnsubscribe(params.token);
        if (!hit) {
          ctx.counters.forgedToken("unsubscribe");
          throw notFound("unsubscribe link");
        }
        await checkOneClickBody(request);
        let done;
        try {
          done = ctx.tracking.unsubscribe(hit, clientOf(request, server));
        } catch (e) {
          ctx.log.error("tracking_record_failed", { kind: "unsubscribe", error: e });
          throw new ApiError(503, "unavailable", "the unsubscribe could not be stored, try again");
        }
        if (!done) throw notFound("recipient (the message is no longer kept)");
        if (done.recorded) ctx.counters.trackingEvent("unsubscribed");
        return page(200, donePage(done.recipient.address));
      },
      {
        params: Token,
        // read by hand (checkOneClickBody): the form body is tiny and its one field is checked exactly
        parse: "none",
        response: { 400: ErrorBody, 404: ErrorBody, 413: ErrorBody, 503: ErrorBody },
        detail: {
          tags: ["tracking"],
          summary: "One-click unsubscribe (RFC 8058): body List-Unsubscribe=One-Click, or empty",
          description:
            "Records `unsubscribed` on the recipient and puts the address on the message owner's suppression list (reason unsubscribe). " +
            "Repeating it changes nothing.",
          security: [],
        },
      },
    );
}

/** The recipient a valid unsubscribe token names; 404 otherwise. */
function unsubscribeRecipient(ctx: ApiContext, token: string) {
  const hit = ctx.tokens.verifyUnsubscribe(token);
  if (!hit) {
    ctx.counters.forgedToken("unsubscribe");
    throw notFound("unsubscribe link");
  }
  const rec = ctx.tracking.recipientOf(hit);
  if (!rec) throw notFound("recipient (the message is no longer kept)");
  return rec;
}

/**
 * RFC 8058 §3.2: the POST's body is `List-Unsubscribe=One-Click`, as application/x-www-form-urlencoded or
 * multipart/form-data. An empty body is taken too (some clients send none); anything else is a 400.
 */
async function checkOneClickBody(request: Request): Promise<void> {
  const length = Number(request.headers.get("content-length") ?? 0);
  if (length > MAX_UNSUBSCRIBE_BODY) throw new ApiError(413, "too_large", "a one-click unsubscribe body is List-Unsubscribe=One-Click", "body");
  const type = (request.headers.get("content-type") ?? "").split(";", 1)[0]!.trim().toLowerCase();
  let value: string | null;
  if (type === "multipart/form-data") {
    const form = await request.formData().catch(() => null);
    const field = form?.get("List-Unsubscribe");
    value = typeof field === "string" ? field : null;
  } else {
    const text = (await request.text()).slice(0, MAX_UNSUBSCRIBE_BODY);
    if (text.trim() === "") return;
    value = new URLSearchParams(text.trim()).get("List-Unsubscribe");
  }
  if (value?.toLowerCase() !== "one-click") {
    throw new ApiError(400, "invalid_request", "expected the body List-Unsubscribe=One-Click (RFC 8058), or none", "List-Unsubscribe");
  }
}

function page(status: number, html: string): Response {
  return new Response(html, {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      // the page loads nothing and may not be framed (a framed button could be clicked by trickery)
      "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
      "referrer-policy": "no-referrer",
      "x-robots-tag": "noindex",
    },
  });
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

const STYLE = "body{font:16px/1.5 system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em}button{font:inherit;padding:.5em 1.5em}";

function shell(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<meta name="robots" content="noindex"><title>${title}</title><style>${STYLE}</style></head><body><main>${body}</main></body></html>\n`;
}

/** One button; the form posts what a one-click client would, to this same URL (relative, so a path prefix in public_url holds). */
function confirmPage(token: string, address: string): string {
  return shell("Unsubscribe", `<h1>Unsubscribe</h1><p>Stop sending mail from this sender to <strong>${escapeHtml(address)}</strong>?</p>` +
    `<form method="post" action="./${escapeHtml(token)}"><input type="hidden" name="List-Unsubscribe" value="One-Click">` +
    `<button type="submit">Unsubscribe</button></form>`);
}

function donePage(address: string): string {
  return shell("Unsubscribed", `<h1>Unsubscribed</h1><p><strong>${escapeHtml(address)}</strong> will get no more mail from this sender.</p>`);
}
