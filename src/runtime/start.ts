/** @module runtime/start — `serve` wiring: config → lock → store → intake → listeners → delivery; stops them together. */
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import type { Config, WebhookConfig } from "../config/schema.ts";
import { ensurePrivateDir, openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { WebhookWorker } from "../events/webhooks.ts";
import { Intake } from "../intake/accept.ts";
import { VerifiedDomains } from "../intake/verified-domains.ts";
import { domainChecker, outcomeOf } from "../spf/check.ts";
import type { Logger } from "../observe/log.ts";
import { Enqueuer, MESSAGE_BODIES_TABLE } from "../queue/enqueue.ts";
import { openBodyFiles } from "../queue/bodies.ts";
import { DeliveryService } from "../delivery/service.ts";
import { ownAddresses } from "../delivery/own-addresses.ts";
import { CredentialChecker, UserNames } from "../auth/users.ts";
import { startSmtp, type SmtpService } from "../smtp/server.ts";
import { startHttp } from "../api/server.ts";
import { BounceIngest } from "../bounce/ingest.ts";
import { startRetention } from "../bounce/retention.ts";
import { verpCodec, type Verp } from "../bounce/verp.ts";
import type { UserId } from "../mail/ids.ts";
import { reported, StoreHealth } from "../observe/health.ts";
import { Metrics } from "../observe/metrics.ts";
import { queueGauges } from "../queue/metrics.ts";
import pkg from "../../package.json";
import { Engagement } from "../queue/engagement.ts";
import { SuppressionWriter } from "../suppression/list.ts";
import { TrackingRecorder } from "../tracking/record.ts";
import { TrackingTokens } from "../tracking/token.ts";
import { loadDkimKeys } from "../dkim/keys.ts";
import { DkimSigner } from "../dkim/sign.ts";
import { firstRun, instanceSecret, secretPath } from "./bootstrap.ts";
import { lockServe } from "./lock.ts";
import { reloadConfig } from "./reload.ts";
import { resolveWebhooks } from "./webhooks.ts";

/** Something `serve` runs that must be stopped on shutdown. */
export interface Service {
  name: string;
  /** stop accepting new work at once; finish in-flight work by `deadline` (ms since epoch) or hand it back */
  stop(deadline?: number): Promise<void>;
}

/**
 * The whole of a shutdown, from the first stop() call to the store's close: every service stops at once and
 * shares this one deadline, so the sum fits in `serve`'s 30 s limit (cli/serve.ts) with time left to close.
 * SMTP's own 10 s close timeout (smtp/server.ts) runs inside it.
 */
export const SHUTDOWN_BUDGET_MS = 25_000;

export interface Runtime {
  /** the configuration in force (after a reload: the new one, less the keys that need a restart) */
  config: Config;
  store: Store;
  log: Logger;
  secret: Buffer;
  /** whether the store is failing, as the work using it reports (answers /healthz) */
  health: StoreHealth;
  /** this outpost's Prometheus registry (GET /metrics); every service declares its metrics on it */
  metrics: Metrics;
  events: EventRecorder;
  intake: Intake;
  /** VERP return paths (signed with a key derived from `secret`) */
  verp: Verp;
  /** mail for the bounce domain */
  bounces: BounceIngest;
  /** click, open and unsubscribe tokens (signed with keys derived from `secret`) */
  tokens: TrackingTokens;
  /** records what a valid tracking link reports */
  tracking: TrackingRecorder;
  /** the `[[dkim]]` keys, ready to sign (delivery's last per-recipient step) */
  dkim: DkimSigner;
  services: Service[];
  /** the SMTP listeners (bound addresses for tests that listen on port 0) */
  smtp?: SmtpService;
  /** the delivery loop (throttle snapshot and metrics) */
  delivery?: DeliveryService;
  /** the webhook outbox worker */
  webhooks?: WebhookWorker;
  /** the HTTP API listener (bound port for tests that listen on port 0) */
  http?: { port: number };
  stop(): Promise<void>;
  /**
   * SIGHUP (runtime/reload.ts): `load` reads the config again; what can change while running is applied, the
   * rest is logged as needing a restart, and a config `load` refuses leaves everything as it is.
   */
  reload(load: () => Config): void;
}

export interface StartOptions {
  /** where first-run secrets are printed (stderr by default: stdout carries only JSON log lines) */
  announce?: (line: string) => void;
  /** port delivery dials for MX hosts instead of 25 (tests: receivers, or ourselves, on loopback high ports) */
  mxPort?: number;
}

/**
 * Order matters: the lock comes before anything touches the database, and leases are recovered (delivery) only
 * once the lock and every listener are held, so a second `serve` that cannot start changes nothing.
 */
export async function start(config: Config, log: Logger, opts: StartOptions = {}): Promise<Runtime> {
  // first: a key that cannot sign is a config error (exit 2), found before anything is created or locked
  const dkim = new DkimSigner(loadDkimKeys(config.dkim, config.file, log));
  const dbPath = config.database.path;
  ensureDirs(config, log);
  const lock = dbPath === ":memory:" ? null : lockServe(`${dbPath}.lock`);
  let store: Store;
  try {
    store = openStore(dbPath, {
      verify: { skip: [MESSAGE_BODIES_TABLE] },
      usedBefore: secretPath(config.data_dir),
      checkpointThread: { onFailure: (why) => log.warn("checkpoint_thread_failed", { error: why }) },
    });
  } catch (e) {
    lock?.release();
    throw e;
  }
  const services: Service[] = [];
  // in parallel, not one after another: delivery must stop claiming at once, and its in-flight transactions must
  // not wait for SMTP sessions to close before their own window starts (10 s + 25 s overran serve's 30 s)
  const stopAll = async () => {
    const deadline = Date.now() + SHUTDOWN_BUDGET_MS;
    await Promise.all(services.map(async (s) => {
      try {
        await s.stop(deadline);
      } catch (e) {
        log.error("service_stop_failed", { service: s.name, error: e });
      }
    }));
    // last: listeners' sessions may commit mail, and delivery settles, until their stop() returns
    store.close();
    lock?.release();
  };
  try {
    const rt = await wire({ config, log, opts, store, services, dkim, stop: stopAll });
    log.info("started", { hostname: config.hostname, data_dir: config.data_dir, database: dbPath });
    return rt;
  } catch (e) {
    // a listener that cannot bind (port in use, no permission), or a first-run failure, must not leave the rest running
    await stopAll();
    throw e;
  }
}

/** Creates the data dir and the database's directory 0700 when missing; warns when an existing one is open to others. */
function ensureDirs(config: Config, log: Logger): void {
  const dbPath = config.database.path;
  for (const dir of new Set([config.data_dir, ...(dbPath === ":memory:" ? [] : [dirname(dbPath)])])) {
    const { created, mode } = ensurePrivateDir(dir);
    if (!created && mode & 0o077) {
      log.warn("directory_not_private", { path: dir, mode: mode.toString(8).padStart(4, "0"), hint: `chmod 700 ${dir}, unless other services need to read it` });
    }
  }
}

interface Wiring {
  config: Config;
  log: Logger;
  opts: StartOptions;
  store: Store;
  /** filled in as each service starts, for `stop` */
  services: Service[];
  dkim: DkimSigner;
  stop: () => Promise<void>;
}

/** Everything after the store: the flows, the listeners, then delivery, then the first-run chores. */
async function wire({ config, log, opts, store, services, dkim, stop }: Wiring): Promise<Runtime> {
  const freshDataDir = !existsSync(secretPath(config.data_dir));
  const secret = instanceSecret(config.data_dir);
  const health = new StoreHealth();
  const metrics = new Metrics(log);
  metrics.gauge({ name: "outpost_build_info", help: "Always 1; the version label is the running outpost's.", labelNames: ["version"] })
    .set({ version: pkg.version }, 1);
  queueGauges(metrics, store.sqlite);
  const userNames = new UserNames(store.db);
  const userName = (id: UserId | null) => userNames.nameOf(id);
  // a hook's user that does not exist is a config error (exit 2), found before any listener opens
  const hooks = resolveWebhooks(config.webhook, config.file, store.db);
  const events = new EventRecorder(store.sqlite, hooks);
  const enqueuer = new Enqueuer(store.sqlite, events, Date.now, health.reporter("intake"), openBodyFiles(store.sqlite));
  const checkDomain = domainChecker(config);
  const verifiedDomains = config.spf.require_verified_domains
    ? new VerifiedDomains(store.db, async (domain) => outcomeOf(await checkDomain(domain)))
    : undefined;
  const intake = new Intake({
    store,
    enqueuer,
    hostname: config.hostname,
    limits: {
      maxMessageSize: config.smtp.max_message_size,
      maxRecipients: config.smtp.max_recipients,
      maxHops: config.smtp.max_hops,
      allowAddressLiterals: config.smtp.allow_address_literals,
    },
    tracking: config.tracking,
    publicUrl: config.http.public_url,
    log,
    verifiedDomains,
    metrics,
  });
  const verp = verpCodec(secret);
  const bounces = new BounceIngest({ sqlite: store.sqlite, events, intake, verp, tracking: config.tracking, log, userName, metrics });
  const tokens = new TrackingTokens(secret);
  const trackingHealth = health.reporter("tracking");
  const tracking = new TrackingRecorder({
    store: new Engagement(store.sqlite, events),
    suppressions: new SuppressionWriter(store.sqlite),
    transaction: (fn) => reported(trackingHealth, () => store.sqlite.transaction(fn).immediate()),
    log,
    userName,
  });
  const smtp = await startSmtp({ config, intake, bounces, credentials: new CredentialChecker(store.db), log, metrics });
  services.push(smtp);
  const http = startHttp({ config, store, intake, log, health, tokens, tracking, checkDomain, metrics });
  services.push(http.service);
  // last: it recovers the leases a dead process left, which is only safe once every listener is ours; and our
  // own listeners, bound by now (port 0 → the real port), are never dialled for an MX host
  const delivery = new DeliveryService({
    config, sqlite: store.sqlite, events, enqueuer, intake, verp, tokens, dkim, log, metrics, userName,
    isOwnAddress: ownAddresses(smtp.addresses()), connectPort: opts.mxPort,
    health: { claim: health.reporter("claim"), settle: health.reporter("settle") },
  });
  services.push(delivery);
  // like delivery, it gives back a dead process's leases: only once the lock and the listeners are ours
  const webhooks = new WebhookWorker({ sqlite: store.sqlite, hooks, retention: config.webhook_retention, log, metrics, userName }).start();
  services.push(webhooks);
  services.push(startRetention({ sqlite: store.sqlite, retention: config.tracking.inbound_retention, log }));
  // only once every listener is up: a first start that fails (port in use) creates nothing, so the next one
  // still creates the admin and shows the secrets (shown once, they would otherwise be lost in an error)
  const lines = await firstRun(store.db, freshDataDir);
  if (lines.length > 0) log.info("first_start", { message: lines[0], see: "stderr" });
  for (const line of lines) (opts.announce ?? ((l) => process.stderr.write(`${l}\n`)))(line);
  const rt: Runtime = {
    config, store, log, secret, health, metrics, events, intake, verp, bounces, tokens, tracking, dkim, services, smtp, delivery, webhooks,
    http: { port: http.port }, stop,
    reload: (load) => {
      const hookUsers = {
        reconfigure: (list: readonly WebhookConfig[], retention: number) => {
          const resolved = resolveWebhooks(list, rt.config.file, store.db);
          events.reconfigure(resolved);
          webhooks.reconfigure(resolved, retention);
        },
      };
      // a hook naming a user that does not exist refuses the whole new config, as it would at start
      const checked = () => {
        const next = load();
        resolveWebhooks(next.webhook, next.file, store.db);
        return next;
      };
      rt.config = reloadConfig(rt.config, checked, { smtp, http, delivery, intake, events: hookUsers }, log);
    },
  };
  return rt;
}
