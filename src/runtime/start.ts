/** @module runtime/start — `serve` wiring: config → store → intake → listeners and workers; stops them together. */
import type { Config } from "../config/schema.ts";
import { ensurePrivateDir, openStore, type Store } from "../db/client.ts";
import { EventRecorder } from "../events/record.ts";
import { Intake } from "../intake/accept.ts";
import type { Logger } from "../observe/log.ts";
import { Enqueuer } from "../queue/enqueue.ts";
import { DeliveryService } from "../delivery/service.ts";
import { ownAddresses, type OwnAddress } from "../delivery/own-addresses.ts";
import { CredentialChecker } from "../auth/users.ts";
import { startSmtp, type SmtpService } from "../smtp/server.ts";
import { startHttp } from "../api/server.ts";
import { firstRunAdmin, instanceSecret } from "./bootstrap.ts";
import { BounceIngest } from "../bounce/ingest.ts";
import { startRetention } from "../bounce/retention.ts";
import { verpCodec, type Verp } from "../bounce/verp.ts";

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
  config: Config;
  store: Store;
  log: Logger;
  secret: Buffer;
  events: EventRecorder;
  intake: Intake;
  /** VERP return paths (signed with a key derived from `secret`) */
  verp: Verp;
  /** mail for the bounce domain */
  bounces: BounceIngest;
  services: Service[];
  /** the SMTP listeners (bound addresses for tests that listen on port 0) */
  smtp?: SmtpService;
  /** the delivery loop (throttle snapshot and metrics) */
  delivery?: DeliveryService;
  /** the HTTP API listener (bound port for tests that listen on port 0) */
  http?: { port: number };
  stop(): Promise<void>;
}

export interface StartOptions {
  /** where first-run secrets are printed (stdout for the CLI) */
  announce?: (line: string) => void;
  /** port delivery dials for MX hosts instead of 25 (tests: receivers, or ourselves, on loopback high ports) */
  mxPort?: number;
}

export async function start(config: Config, log: Logger, opts: StartOptions = {}): Promise<Runtime> {
  ensurePrivateDir(config.data_dir);
  const store = openStore(config.database.path);
  const secret = instanceSecret(config.data_dir);
  const events = new EventRecorder(store.sqlite, config.webhook);
  const enqueuer = new Enqueuer(store.sqlite, events);
  const intake = new Intake({
    store,
    enqueuer,
    hostname: config.hostname,
    limits: { maxMessageSize: config.smtp.max_message_size, maxRecipients: config.smtp.max_recipients, maxHops: config.smtp.max_hops },
    tracking: config.tracking,
  });
  const verp = verpCodec(secret);
  const bounces = new BounceIngest({ sqlite: store.sqlite, events, intake, verp, tracking: config.tracking, log });
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
  };
  let rt: Runtime;
  try {
    // our own listeners are known once bound (port 0 → the real port); before that nothing of ours listens, so
    // nothing can be handed to ourselves
    let isOwnAddress: OwnAddress = () => false;
    const delivery = new DeliveryService({
      config, sqlite: store.sqlite, events, enqueuer, intake, verp, log, isOwnAddress: (ip, port) => isOwnAddress(ip, port), connectPort: opts.mxPort,
    });
    services.push(delivery);
    services.push(startRetention({ sqlite: store.sqlite, retention: config.tracking.inbound_retention, log }));
    const smtp = await startSmtp({ config, intake, bounces, credentials: new CredentialChecker(store.db), log });
    services.push(smtp);
    isOwnAddress = ownAddresses(smtp.addresses());
    const http = startHttp({ config, store, intake, log, extraMetrics: () => `${smtp.metrics()}\n${delivery.metrics()}` });
    services.push(http.service);
    rt = { config, store, log, secret, events, intake, verp, bounces, services, smtp, delivery, http: { port: http.port }, stop: stopAll };
    // only once every listener is up: a first start that fails (port in use) creates nothing, so the next one
    // still creates the admin and shows the secrets (shown once, they would otherwise be lost in an error)
    for (const line of await firstRunAdmin(store.db)) (opts.announce ?? console.log)(line);
  } catch (e) {
    // a listener that cannot bind (port in use, no permission), or a first-run failure, must not leave the rest running
    await stopAll();
    throw e;
  }
  log.info("started", { hostname: config.hostname, data_dir: config.data_dir });
  return rt;
}
