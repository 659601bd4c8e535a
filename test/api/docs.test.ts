/**
 * The docs page works with no internet: /docs and everything it loads (script, stylesheets, the OpenAPI document)
 * come from outpost itself, over its real listener, and the document describes every endpoint, the webhook
 * requests and the error shape.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startApi, type ApiFixture } from "./fixture.ts";

let f: ApiFixture;

beforeAll(async () => {
  f = await startApi();
});

afterAll(async () => {
  await f?.stop();
});

describe("GET /docs", () => {
  test("names no other host, and every asset it references loads from outpost", async () => {
    const page = new URL("/docs", f.base);
    const res = await fetch(page);
    expect(res.status).toBe(200);
    const html = await res.text();
    // no absolute URL at all (scheme or protocol-relative): a server without internet, or a CSP of 'self', still works
    expect(html).not.toMatch(/(?:https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}/i);
    const config = JSON.parse(/data-configuration='([^']*)'/.exec(html)![1]!) as { url: string; withDefaultFonts: boolean; telemetry: boolean };
    expect(config).toMatchObject({ withDefaultFonts: false, telemetry: false });
    const refs = [
      ...[...html.matchAll(/<script[^>]*\ssrc="([^"]+)"/g)].map((m) => m[1]!),
      ...[...html.matchAll(/<link[^>]*\shref="([^"]+)"/g)].map((m) => m[1]!),
      config.url,
    ];
    expect(refs.length).toBeGreaterThanOrEqual(2);
    for (const ref of refs) {
      const url = new URL(ref, page);
      expect(url.origin, ref).toBe(page.origin);
      const asset = await fetch(url);
      expect(asset.status, ref).toBe(200);
      expect((await asset.arrayBuffer()).byteLength, ref).toBeGreaterThan(1000);
    }
  });

  test("the script is cached for good (its path names its version) and is Scalar's bundle", async () => {
    const html = await (await fetch(`${f.base}/docs`)).text();
    const src = /<script[^>]*\ssrc="([^"]+)"/.exec(html)![1]!;
    const res = await fetch(new URL(src, `${f.base}/docs`));
    expect(res.headers.get("content-type")).toStartWith("text/javascript");
    expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    const js = await res.text();
    expect(js.length).toBeGreaterThan(1_000_000);
    expect(js).toContain("api-reference");
  });
});

describe("GET /openapi.json", () => {
  const doc = async () =>
    (await (await fetch(`${f.base}/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
      webhooks: Record<string, { post: { requestBody: unknown; parameters: { name: string }[] } }>;
      components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> };
    };

  test("describes every endpoint", async () => {
    const d = await doc();
    for (const [path, method] of [
      ["/v1/send", "post"], ["/v1/messages/{id}", "get"], ["/v1/events", "get"], ["/v1/suppressions", "get"], ["/v1/suppressions", "post"],
      ["/v1/suppressions", "delete"], ["/v1/domains/{domain}/check", "get"], ["/t/c/{token}", "get"], ["/t/o/{token}", "get"],
      ["/t/u/{token}", "get"], ["/t/u/{token}", "post"], ["/healthz", "get"], ["/metrics", "get"],
    ] as const) {
      expect(d.paths[path]?.[method], `${method} ${path}`).toBeDefined();
    }
    // the page's own asset is no API endpoint
    expect(Object.keys(d.paths).some((p) => p.startsWith("/docs"))).toBe(false);
  });

  test("describes the webhook request, the EVENT it carries and the error shape", async () => {
    const d = await doc();
    expect(d.openapi).toStartWith("3.1");
    const hook = d.webhooks.event!.post;
    expect(hook.parameters.map((p) => p.name)).toEqual(["X-Outpost-Signature", "X-Outpost-Timestamp", "X-Outpost-Event-Id"]);
    expect(JSON.stringify(hook.requestBody)).toContain("#/components/schemas/Event");
    expect(d.components.schemas.Event).toMatchObject({ properties: { id: {}, type: {}, time: {}, message_id: {}, recipient: {}, details: {} } });
    expect(d.components.schemas.Error).toMatchObject({ properties: { error: { properties: { code: {}, message: {}, field: {} } } } });
    expect(d.components.securitySchemes.metrics_token).toMatchObject({ type: "http", scheme: "bearer" });
  });
});
