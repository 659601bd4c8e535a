/** @module api/openapi — the OpenAPI document (GET /openapi.json) and its docs page (GET /docs), built from the route schemas. */
import { openapi } from "@elysiajs/openapi";

export function openapiPlugin(version: string) {
  return openapi({
    path: "/docs",
    specPath: "/openapi.json",
    exclude: { paths: ["/docs", "/openapi.json"] },
    documentation: {
      info: {
        title: "outpost",
        version,
        description:
          "Self-hosted email relay. Authenticate with `Authorization: Bearer KEY` or `?access_token=KEY`. " +
          'Every error is `{"error":{"code","message","field"}}`; `field` names the request field at fault.',
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
      ],
    },
  });
}
