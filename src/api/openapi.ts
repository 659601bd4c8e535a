/**
 * @module api/openapi — the OpenAPI document (GET /openapi.json) and its docs page (GET /docs), built from the route
 * schemas, with the page's script (Scalar's standalone bundle) served from the binary itself.
 */
import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
import { EVENT_TYPES } from "../config/build.ts";
import { ErrorBody, Event } from "./model.ts";
import scalarPackage from "../../node_modules/@scalar/api-reference/package.json";
// @ts-expect-error -- a browser bundle without type declarations; imported as a file (its embedded path), never as code
import scalarBundlePath from "../../node_modules/@scalar/api-reference/dist/browser/standalone.js" with { type: "file" };

type ScalarOptions = NonNullable<NonNullable<Parameters<typeof openapi>[0]>["scalar"]>;

/**
 * Where the page finds Scalar: in the binary (`bun build --compile` embeds the file), so the page works on a server
 * with no way out to the internet and under a CSP of 'self'. The version in the path lets it be cached for good.
 */
export const SCALAR_ASSET = `/docs/assets/scalar-${scalarPackage.version}.js`;

/**
 * The plugin writes info.description unescaped into `<meta content="...">` on the docs page, so it must hold
 * no `"`, `<` or `&`; the error shape is written out in words for that reason.
 */
const DESCRIPTION =
  "Self-hosted email relay. Authenticate with `Authorization: Bearer KEY` or `?access_token=KEY`. " +
  "Every error is a JSON object `error` holding `code`, `message` and `field`; `field` names the request field at fault.";

/** The docs page's script, as stored in the binary; cached by browsers for a year (its path names its version). */
export function docsAssets() {
  return new Elysia().get(
    SCALAR_ASSET,
    () =>
      new Response(Bun.file(scalarBundlePath as string), {
        headers: { "content-type": "text/javascript; charset=utf-8", "cache-control": "public, max-age=31536000, immutable" },
      }),
    { detail: { hide: true } },
  );
}

/**
 * The docs page's Scalar options; Scalar fills in the rest. `cdn` is relative, as the plugin writes the spec's URL
 * ("openapi.json"), so the page also works behind a proxy that mounts outpost under a path. Nothing on the page
 * reaches another host: no web fonts, no telemetry, no AI agent or MCP calls (`agent` is newer than the plugin's
 * option type, hence the wider type).
 */
const SCALAR_OPTIONS: Partial<ScalarOptions> & { agent: { disabled: boolean } } = {
  cdn: SCALAR_ASSET.slice(1),
  withDefaultFonts: false,
  telemetry: false,
  agent: { disabled: true },
  mcp: { disabled: true },
  showDeveloperTools: "never",
};

const header = (name: string, description: string, example: string) =>
  ({ name, in: "header" as const, required: true, description, schema: { type: "string" as const }, example });

/**
 * What outpost sends to a `[[webhook]]` URL (OpenAPI 3.1 `webhooks`): one POST per EVENT, signed. docs/webhooks.md
 * says how to verify it.
 */
const WEBHOOKS = {
  event: {
    post: {
      summary: "One event, POSTed to each [[webhook]] that wants its type",
      description:
        `Event types: ${EVENT_TYPES.join(", ")}. Any 2xx answer acknowledges it; anything else (redirects included) is retried ` +
        "at about 10 s, 1 m, 5 m, 15 m, 1 h, then hourly, for 24 h. Delivery is at least once: keep the event ids you processed.",
      parameters: [
        header("X-Outpost-Signature", "sha256= and the hex HMAC-SHA256 of the raw body with the hook's secret", "sha256=5d1c0e…"),
        header("X-Outpost-Timestamp", "when this attempt was made, unix seconds", "1767225600"),
        header("X-Outpost-Event-Id", "the event's id, as in the body: the key for dropping repeats", "4711"),
      ],
      requestBody: { required: true, content: { "application/json": { schema: { $ref: "#/components/schemas/Event" } } } },
      responses: { "200": { description: "any 2xx: received" } },
      security: [],
    },
  },
};

export function openapiPlugin(version: string) {
  return openapi({
    path: "/docs",
    specPath: "/openapi.json",
    // the plugin types this as Scalar's full configuration (every key required) although Scalar fills in defaults
    scalar: SCALAR_OPTIONS as ScalarOptions,
    // the plugin leaves out any path with a dot as a static file unless told not to: Mailgun's messages.mime has one
    exclude: { paths: ["/docs", "/openapi.json", SCALAR_ASSET], staticFile: false },
    documentation: {
      info: {
        title: "outpost",
        version,
        description: DESCRIPTION,
      },
      components: {
        securitySchemes: {
          bearer: { type: "http", scheme: "bearer", description: "an API key from `outpost key create`" },
          access_token: { type: "apiKey", in: "query", name: "access_token" },
          metrics_token: { type: "http", scheme: "bearer", description: "`http.metrics_token` from the config (GET /metrics only, when set)" },
          postmark: { type: "apiKey", in: "header", name: "X-Postmark-Server-Token", description: "an outpost API key, for Postmark's routes" },
          mailgun: { type: "http", scheme: "basic", description: "user api, an outpost API key as password, for Mailgun's routes" },
        },
        schemas: { Error: ErrorBody, Event },
      },
      webhooks: WEBHOOKS,
      security: [{ bearer: [] }, { access_token: [] }],
      tags: [
        { name: "send", description: "submit mail" },
        { name: "messages", description: "delivery status" },
        { name: "events", description: "the event log" },
        { name: "suppressions", description: "addresses never sent to" },
        { name: "operations", description: "health and metrics; no key needed" },
        { name: "tracking", description: "the click, open and unsubscribe links in tracked mail; no key needed" },
        { name: "postmark", description: "Postmark's send API, drop-in: a Postmark client pointed at outpost (docs/compat.md)" },
        { name: "mailgun", description: "Mailgun's send API, drop-in: a Mailgun client pointed at outpost (docs/compat.md)" },
      ],
    },
  });
}
