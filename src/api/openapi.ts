/** @module api/openapi — the OpenAPI document (GET /openapi.json) and its docs page (GET /docs), built from the route schemas. */
import { openapi } from "@elysiajs/openapi";

type ScalarOptions = NonNullable<NonNullable<Parameters<typeof openapi>[0]>["scalar"]>;

/**
 * The docs page loads Scalar from a CDN: pinned, so the page does not change (or break) under us. 1.72.x ships
 * dist/browser/standalone.js (no .min.js), so the URL is given whole rather than built by the plugin.
 */
export const SCALAR_VERSION = "1.72.1";

/**
 * The plugin writes info.description unescaped into `<meta content="...">` on the docs page, so it must hold
 * no `"`, `<` or `&`; the error shape is written out in words for that reason.
 */
const DESCRIPTION =
  "Self-hosted email relay. Authenticate with `Authorization: Bearer KEY` or `?access_token=KEY`. " +
  "Every error is a JSON object `error` holding `code`, `message` and `field`; `field` names the request field at fault.";

export function openapiPlugin(version: string) {
  return openapi({
    path: "/docs",
    specPath: "/openapi.json",
    // the plugin types this as Scalar's full configuration (every key required) although Scalar fills in
    // defaults for whatever is left out: these two keys are all we set
    scalar: {
      version: SCALAR_VERSION,
      cdn: `https://cdn.jsdelivr.net/npm/@scalar/api-reference@${SCALAR_VERSION}/dist/browser/standalone.js`,
    } as ScalarOptions,
    exclude: { paths: ["/docs", "/openapi.json"] },
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
        },
      },
      security: [{ bearer: [] }, { access_token: [] }],
      tags: [
        { name: "send", description: "submit mail" },
        { name: "messages", description: "delivery status" },
        { name: "events", description: "the event log" },
        { name: "suppressions", description: "addresses never sent to" },
        { name: "operations", description: "health and metrics; no key needed" },
        { name: "tracking", description: "the click, open and unsubscribe links in tracked mail; no key needed" },
      ],
    },
  });
}
