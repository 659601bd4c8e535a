import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "./errors.ts";
import { webhookName } from "./build.ts";
import { loadConfig, locateConfig, parseConfig } from "./load.ts";
import type { DeliveryConfig } from "./schema.ts";

let dir = "";
let counter = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "outpost-config-"));
  mkdirSync(join(dir, "dkim"));
  writeFileSync(join(dir, "dkim", "example.com.pem"), "-----BEGIN PRIVATE KEY-----\n");
  writeFileSync(join(dir, "cert.pem"), "cert");
  writeFileSync(join(dir, "key.pem"), "key");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes TOML to a fresh file in the temp dir and returns its path. */
function write(toml: string): string {
  const file = join(dir, `outpost-${++counter}.toml`);
  writeFileSync(file, toml);
  return file;
}

/** Loads `toml` and returns the ConfigError it must raise. */
function failure(toml: string): { file: string; error: ConfigError } {
  const file = write(toml);
  try {
    loadConfig(file, {});
  } catch (error) {
    if (error instanceof ConfigError) return { file, error };
    throw error;
  }
  throw new Error("expected a ConfigError");
}

/** Asserts that loading `toml` fails naming the file, `key` and a problem matching `problem`. */
function expectFailure(toml: string, key: string, problem: RegExp): void {
  const { file, error } = failure(toml);
  expect(error.message).toContain(`${file}: ${key}: `);
  expect(error.key).toBe(key);
  expect(error.problem).toMatch(problem);
}

const FULL_EXAMPLE = `
hostname = "mail.example.com"
data_dir = "./data"

[smtp]
listen = ["127.0.0.1:2525"]
tls_listen = []
tls_cert = ""
tls_key = ""
auth_requires_tls = true
trusted_networks = []
max_message_size = "25MB"
max_recipients = 100
max_connections_per_ip = 20
max_connections = 1000
auth_failures_before_block = 5
auth_block_time = "15m"
max_hops = 50
allow_address_literals = false

[http]
listen = "127.0.0.1:8025"
public_url = "http://127.0.0.1:8025"
rate = ""

[dns]
servers = []

[delivery]
concurrency = 200
per_destination_connections = 5
messages_per_connection = 100
retry = ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h"]
max_queue_time = "5d"
tls = "opportunistic"
sandbox = false

[[delivery.route]]
domain = "*"
host = "smarthost.example.net"
port = 587
tls = "required"
username = "..."
password = "..."

[delivery.destination."gmail.com"]
per_destination_connections = 10
rate = "600/min"

[tracking]
bounce_domain = "bounces.example.com"
inline_css = false
clicks = false
opens = false
bounces = false

[spf]
include_domain = "_senderspf.example.com"
ips = ["203.0.113.7", "2001:db8::7"]

[[dkim]]
domain = "example.com"
selector = "s1"
private_key_file = "dkim/example.com.pem"

[[webhook]]
url = "https://app.example.com/hooks/mail"
events = ["delivered", "deferred", "bounced", "opened", "clicked", "complained"]
secret = "..."

[database]
url = "sqlite:./data/outpost.db"
`;

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

describe("defaults", () => {
  test("no file gives the documented defaults", () => {
    const config = parseConfig("", { baseDir: dir, env: {} });
    expect(config.file).toBeNull();
    expect(config.hostname).toBe(hostname());
    expect(config.data_dir).toBe(join(dir, "data"));
    expect(config.log_level).toBe("info");
    expect(config.smtp.listen).toEqual([{ host: "127.0.0.1", port: 2525 }]);
    expect(config.smtp.max_message_size).toBe(25 * 1024 * 1024);
    expect(config.smtp.auth_block_time).toBe(15 * MINUTE);
    expect(config.smtp.max_hops).toBe(50);
    expect(config.smtp.max_connections).toBe(1000);
    expect(config.smtp.allow_address_literals).toBe(false);
    expect(config.http).toEqual({ listen: { host: "127.0.0.1", port: 8025 }, public_url: "http://127.0.0.1:8025", rate: null, metrics_token: "" });
    expect(config.delivery.retry).toEqual([1, 5, 15, 30, 60, 120, 240, 480].map((m) => m * MINUTE));
    expect(config.delivery.max_queue_time).toBe(120 * HOUR);
    expect(config.delivery.delay_warning).toBe(0);
    expect(config.delivery.concurrency).toBe(200);
    expect(config.tracking).toEqual({
      bounce_domain: "", bounce_max_size: 1024 * 1024, postmaster_forward: "", inbound_retention: 30 * 24 * HOUR,
      inline_css: false, clicks: false, opens: false, bounces: false, unsubscribe: false,
    });
    expect(config.database).toEqual({ url: `sqlite:${join(dir, "data", "outpost.db")}`, path: join(dir, "data", "outpost.db") });
  });

  test("locateConfig finds nothing when no candidate exists", () => {
    expect(locateConfig(undefined, [join(dir, "absent.toml")])).toBeNull();
  });

  test("the result is deeply frozen", () => {
    const config = parseConfig("", { env: {} });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.smtp.listen[0])).toBe(true);
    expect(Object.isFrozen(config.delivery.retry)).toBe(true);
  });
});

describe("TLS of static routes", () => {
  const routes = (toml: string) => parseConfig(toml, { baseDir: dir, env: {} }).delivery.route;
  const route = (extra: string) => `[[delivery.route]]\ndomain = "*"\nhost = "smarthost.example.net"\nport = 587\n${extra}`;

  test("a route with credentials verifies the certificate unless it says otherwise", () => {
    expect(routes(route(`username = "u"\npassword = "p"`))[0]!.tls).toBe("verify");
    expect(routes(`[delivery]\ntls = "required"\n${route(`username = "u"\npassword = "p"`)}`)[0]!.tls).toBe("verify");
    expect(routes(route(`username = "u"\npassword = "p"\ntls = "opportunistic"`))[0]!.tls).toBe("opportunistic");
  });

  test("a route without credentials follows delivery.tls", () => {
    expect(routes(route(""))[0]!.tls).toBe("opportunistic");
    expect(routes(`[delivery]\ntls = "required"\n${route("")}`)[0]!.tls).toBe("required");
    expect(routes(route(`tls = "verify"`))[0]!.tls).toBe("verify");
  });

  test("tls_ca is a file relative to the config's directory", () => {
    writeFileSync(join(dir, "ca.pem"), "");
    expect(routes(route(`tls = "verify"\ntls_ca = "ca.pem"`))[0]!.tls_ca).toBe(join(dir, "ca.pem"));
    expect(routes(route(""))[0]!.tls_ca).toBe("");
  });
});

describe("a file setting every section", () => {
  test("parses to the expected values", () => {
    const file = write(FULL_EXAMPLE);
    const config = loadConfig(file, {});
    expect(config.file).toBe(file);
    expect(config.hostname).toBe("mail.example.com");
    expect(config.data_dir).toBe(join(dir, "data"));
    expect(config.delivery.route).toEqual([
      { domain: "*", host: "smarthost.example.net", port: 587, tls: "required", tls_ca: "", username: "...", password: "..." },
    ]);
    expect(config.delivery.destination).toEqual({ "gmail.com": { per_destination_connections: 10, rate: { count: 600, perMs: MINUTE } } });
    expect(config.tracking.bounce_domain).toBe("bounces.example.com");
    expect(config.spf).toEqual({ include_domain: "_senderspf.example.com", ips: ["203.0.113.7", "2001:db8::7"], require_verified_domains: false });
    expect(config.dkim).toEqual([{ domain: "example.com", selector: "s1", private_key_file: join(dir, "dkim", "example.com.pem") }]);
    expect(config.webhook).toEqual([
      {
        name: webhookName("https://app.example.com/hooks/mail"),
        url: "https://app.example.com/hooks/mail",
        events: ["delivered", "deferred", "bounced", "opened", "clicked", "complained"],
        user: "",
        secret: "...",
      },
    ]);
    expect(config.webhook[0]!.name).toMatch(/^app\.example\.com-[0-9a-f]{8}$/);
    expect(config.webhook_retention).toBe(7 * 24 * HOUR);
    expect(config.database.path).toBe(join(dir, "data", "outpost.db"));
    // Everything else equals the defaults, which is what the example spells out.
    const defaults = parseConfig("", { baseDir: dir, env: {} });
    expect(config.smtp).toEqual(defaults.smtp);
    expect(config.http).toEqual(defaults.http);
    const delivery: DeliveryConfig = { ...config.delivery, route: [], destination: {} };
    expect(delivery).toEqual(defaults.delivery);
  });

  test("non-default values", () => {
    const config = parseConfig(
      `log_level = "warn"
[smtp]
listen = ["0.0.0.0:25", "[::]:587"]
tls_cert = "cert.pem"
tls_key = "key.pem"
trusted_networks = ["10.0.0.0/8", "::1"]
max_message_size = 1048576
[http]
public_url = "https://mail.example.com/"
rate = "100/s"
[dns]
servers = ["127.0.0.1:5353", "192.0.2.53"]
[delivery]
delay_warning = "4h"
[[delivery.route]]
domain = "*.Example.org"
host = "relay.example.org"
[delivery.destination."*.protection.outlook.com"]
rate = "10/s"
[database]
url = "sqlite::memory:"`,
      { file: join(dir, "inline.toml"), env: {} },
    );
    expect(config.log_level).toBe("warn");
    expect(config.smtp.listen).toEqual([{ host: "0.0.0.0", port: 25 }, { host: "::", port: 587 }]);
    expect(config.smtp.tls_cert).toBe(join(dir, "cert.pem"));
    expect(config.smtp.trusted_networks).toEqual([
      { family: 4, address: "10.0.0.0", prefix: 8 },
      { family: 6, address: "::1", prefix: 128 },
    ]);
    expect(config.smtp.max_message_size).toBe(1_048_576);
    expect(config.http.public_url).toBe("https://mail.example.com");
    expect(config.http.rate).toEqual({ count: 100, perMs: 1000 });
    expect(config.dns.servers).toEqual([{ host: "127.0.0.1", port: 5353 }, { host: "192.0.2.53", port: 53 }]);
    expect(config.delivery.delay_warning).toBe(4 * 3_600_000);
    expect(config.delivery.route[0]).toEqual({
      domain: "*.example.org", host: "relay.example.org", port: 25, tls: "opportunistic", tls_ca: "", username: "", password: "",
    });
    expect(config.delivery.destination).toEqual({ "*.protection.outlook.com": { rate: { count: 10, perMs: 1000 } } });
    expect(config.database).toEqual({ url: "sqlite::memory:", path: ":memory:" });
  });

  test("a domain may have several DKIM keys under different selectors, which are lower-cased", () => {
    const pem = join(dir, "dkim", "example.com.pem");
    const config = parseConfig(
      `[[dkim]]\ndomain = "Example.com"\nselector = "RSA2026"\nprivate_key_file = "${pem}"\n` +
        `[[dkim]]\ndomain = "example.com"\nselector = "202612"\nprivate_key_file = "${pem}"`,
    );
    expect(config.dkim.map((k) => `${k.selector}._domainkey.${k.domain}`)).toEqual(["rsa2026._domainkey.example.com", "202612._domainkey.example.com"]);
  });

  test("OUTPOST_LOG overrides log_level", () => {
    expect(parseConfig(`log_level = "warn"`, { env: { OUTPOST_LOG: "debug" } }).log_level).toBe("debug");
  });
});

describe("locateConfig", () => {
  test("prefers an explicit file, then the search path in order", () => {
    const first = write("");
    const second = write("");
    expect(locateConfig(first, [second])).toBe(first);
    expect(locateConfig(undefined, [join(dir, "absent.toml"), second, first])).toBe(second);
  });
});

describe("errors name the file and the key", () => {
  test("unknown top-level key", () => expectFailure(`hostnme = "x"`, "hostnme", /^unknown key$/));
  test("unknown table at the top", () => expectFailure(`[smpt]\nlisten = []`, "smpt", /^unknown key$/));
  test("unknown nested key", () => expectFailure(`[smtp]\nmax_size = 5`, "smtp.max_size", /^unknown key$/));
  test("unknown key in an array of tables", () =>
    expectFailure(`[[delivery.route]]\ndomain = "*"\nhost = "h.example"\nprot = 25`, "delivery.route[0].prot", /^unknown key$/));
  test("unknown key in a destination", () =>
    expectFailure(`[delivery.destination."gmail.com"]\nconcurrency = 3`, 'delivery.destination."gmail.com".concurrency', /^unknown key$/));
  test("wrong type", () => expectFailure(`[smtp]\nmax_recipients = "100"`, "smtp.max_recipients", /expected an integer ≥ 1/));
  test("hop limit below one", () => expectFailure(`[smtp]\nmax_hops = 0`, "smtp.max_hops", /expected an integer ≥ 1/));
  test("hop limit not an integer", () => expectFailure(`[smtp]\nmax_hops = 2.5`, "smtp.max_hops", /expected an integer ≥ 1/));
  test("wrong type for a string", () => expectFailure(`hostname = 5`, "hostname", /expected a string/));
  test("integer out of range", () =>
    expectFailure(`[[delivery.route]]\ndomain = "*"\nhost = "h.example"\nport = 70000`, "delivery.route[0].port", /from 1 to 65535/));
  test("bad duration", () => expectFailure(`[smtp]\nauth_block_time = "15 minutes"`, "smtp.auth_block_time", /expected a duration/));
  test("bad delay warning", () => expectFailure(`[delivery]\ndelay_warning = "4 hours"`, "delivery.delay_warning", /expected a duration/));
  test("bad duration in a list", () => expectFailure(`[delivery]\nretry = ["1m", "soon"]`, "delivery.retry[1]", /expected a duration/));
  test("bad size", () => expectFailure(`[smtp]\nmax_message_size = "25XB"`, "smtp.max_message_size", /expected a size/));
  test("bad rate", () => expectFailure(`[http]\nrate = "fast"`, "http.rate", /expected a rate/));
  test("bad listen address", () => expectFailure(`[smtp]\nlisten = ["127.0.0.1:99999"]`, "smtp.listen[0]", /expected an address/));
  test("bad CIDR", () => expectFailure(`[smtp]\ntrusted_networks = ["10.0.0.0/40"]`, "smtp.trusted_networks[0]", /network/));
  test("bad SPF address", () => expectFailure(`[spf]\nips = ["mail.example.com"]`, "spf.ips[0]", /address or network/));
  test("an SPF network with host bits set is refused, naming the network meant", () =>
    expectFailure(`[spf]\nips = ["203.0.113.7/28"]`, "spf.ips[0]", /did you mean "203\.0\.113\.0\/28"/));
  test("SPF networks are kept, single addresses lose their /32", () => {
    const config = parseConfig(`[spf]\nips = ["203.0.113.16/28", "2001:DB8::7/128", "198.51.100.9/32"]`, { file: null, baseDir: "/", env: {} });
    expect(config.spf.ips).toEqual(["203.0.113.16/28", "2001:db8::7", "198.51.100.9"]);
  });
  test("unknown webhook event", () =>
    expectFailure(`[[webhook]]\nurl = "https://a.example/h"\nevents = ["delivered", "sent"]\nsecret = "s"`, "webhook[0].events[1]", /unknown event type/));
  test("a webhook's name, user and url are kept as written", () => {
    const config = parseConfig(`[[webhook]]\nname = "app"\nurl = "https://a.example/h/"\nuser = "shop"\nsecret = "s"`, { env: {} });
    expect(config.webhook[0]).toMatchObject({ name: "app", url: "https://a.example/h/", user: "shop" });
  });
  test("two webhooks with one name", () =>
    expectFailure(`[[webhook]]\nname = "app"\nurl = "https://a.example/h"\nsecret = "s"\n[[webhook]]\nname = "app"\nurl = "https://b.example/h"\nsecret = "t"`,
      "webhook[1].name", /repeats "app" of webhook\[0\]/));
  test("two webhooks with one url and no names", () =>
    expectFailure(`[[webhook]]\nurl = "https://a.example/h"\nsecret = "s"\n[[webhook]]\nurl = "https://a.example/h"\nuser = "shop"\nsecret = "t"`,
      "webhook[1].name", /give each hook its own name/));
  test("a bad webhook name", () => expectFailure(`[[webhook]]\nname = "my hook"\nurl = "https://a.example/h"\nsecret = "s"`, "webhook[0].name", /expected a name/));
  test("bad database url", () => expectFailure(`[database]\nurl = "mysql://db"`, "database.url", /sqlite:PATH/));
  test("postgres is not supported yet", () => expectFailure(`[database]\nurl = "postgres://db/outpost"`, "database.url", /not supported yet/));
  test("bad tls policy", () => expectFailure(`[delivery]\ntls = "always"`, "delivery.tls", /"opportunistic", "required"/));
  test("verify for every MX host", () => expectFailure(`[delivery]\ntls = "verify"`, "delivery.tls", /"verify" is for \[\[delivery\.route\]\]/));
  test("a CA file for a route that does not verify", () => {
    writeFileSync(join(dir, "ca.pem"), "");
    expectFailure(`[[delivery.route]]\ndomain = "*"\nhost = "h.example"\ntls = "required"\ntls_ca = "ca.pem"`, "delivery.route[0].tls_ca", /only used with tls = "verify"/);
  });
  test("an unreadable CA file", () =>
    expectFailure(`[[delivery.route]]\ndomain = "*"\nhost = "h.example"\ntls_ca = "nope.pem"`, "delivery.route[0].tls_ca", /no such file/));
  test("missing required key", () => expectFailure(`[[dkim]]\ndomain = "example.com"\nselector = "s1"`, "dkim[0].private_key_file", /missing/));
  test("unreadable DKIM key", () =>
    expectFailure(`[[dkim]]\ndomain = "example.com"\nselector = "s1"\nprivate_key_file = "nope.pem"`, "dkim[0].private_key_file", /no such file/));
  test("two DKIM keys for one domain and selector", () =>
    expectFailure(
      `[[dkim]]\ndomain = "example.com"\nselector = "s1"\nprivate_key_file = "dkim/example.com.pem"\n` +
        `[[dkim]]\ndomain = "Example.com"\nselector = "S1"\nprivate_key_file = "dkim/example.com.pem"`,
      "dkim[1].selector", /repeats dkim\[0\]/));
  test("tls_cert without tls_key", () => expectFailure(`[smtp]\ntls_cert = "cert.pem"`, "smtp.tls_key", /must be set/));
  test("public_url must be http(s)", () => expectFailure(`[http]\npublic_url = "mail.example.com"`, "http.public_url", /http\(s\) URL/));
  test("public_url is a base: no query or fragment", () => {
    expectFailure(`[http]\npublic_url = "https://mail.example.com/?x=1"`, "http.public_url", /without "\?" or "#"/);
    expectFailure(`[http]\npublic_url = "https://mail.example.com/#top"`, "http.public_url", /without "\?" or "#"/);
  });
  test("an empty public_url is allowed, and a path in it kept", () => {
    expect(parseConfig(`[http]\npublic_url = ""`, { env: {} }).http.public_url).toBe("");
    expect(parseConfig(`[http]\npublic_url = "https://example.com/outpost/"`, { env: {} }).http.public_url).toBe("https://example.com/outpost");
  });
  for (const key of ["clicks", "opens", "unsubscribe"]) {
    test(`tracking.${key} by default without a public_url`, () =>
      expectFailure(`[http]\npublic_url = ""\n[tracking]\n${key} = true`, `tracking.${key}`, /needs http\.public_url/));
  }
  test("a destination named twice", () =>
    expectFailure(`[delivery.destination."gmail.com"]\nrate = "1/s"\n[delivery.destination."Gmail.com"]\nrate = "1/s"`, 'delivery.destination."Gmail.com"', /repeats/));
  test("a table where an array of tables belongs", () => expectFailure(`[dkim]\ndomain = "x"`, "dkim", /array of tables/));
  test("bounce tracking by default without a bounce domain", () =>
    expectFailure(`[tracking]\nbounces = true`, "tracking.bounces", /needs tracking\.bounce_domain/));
  test("a postmaster forward that is no address", () =>
    expectFailure(`[tracking]\npostmaster_forward = "ops"`, "tracking.postmaster_forward", /expected an address/));
  test("a postmaster forward back to the bounce domain", () =>
    expectFailure(`[tracking]\nbounce_domain = "b.example.com"\npostmaster_forward = "ops@B.example.com"`, "tracking.postmaster_forward", /come straight back/));
  test("a zero inbound retention", () => expectFailure(`[tracking]\ninbound_retention = "0s"`, "tracking.inbound_retention", /greater than zero/));

  test("unreadable file", () => {
    const error = catchError(() => loadConfig(dir, {}));
    expect(error.message).toBe(`${dir}: cannot read: is a directory`);
  });

  test("missing explicit file", () => {
    const missing = join(dir, "missing.toml");
    expect(catchError(() => loadConfig(missing, {})).message).toBe(`${missing}: no such file`);
  });

  test("TOML syntax error", () => {
    const { file, error } = failure(`[smtp]\nlisten = ["127.0.0.1:2525"`);
    expect(error.message).toStartWith(`${file}: TOML syntax error: `);
  });

  test("bad OUTPOST_LOG", () => {
    const error = catchError(() => parseConfig("", { env: { OUTPOST_LOG: "loud" } }));
    expect(error.file).toBe("OUTPOST_LOG");
    expect(error.message).toStartWith("OUTPOST_LOG: expected one of debug, info, warn, error");
  });
});

function catchError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}
