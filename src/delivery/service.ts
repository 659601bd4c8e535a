/**
 * @module delivery/service — builds the delivery loop from config (resolver → router, transport, outcomes) for
 * `serve`, and publishes the throttle's state to `data_dir/throttle.json` for `outpost queue` (another process).
 */
import type { Database } from "bun:sqlite";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config/schema.ts";
import type { EventRecorder } from "../events/record.ts";
import type { Logger } from "../observe/log.ts";
import { QueueClaimer, type ClaimedRecipient, type SideExclusions, type StoredMessage } from "../queue/claim.ts";
import type { ExpiredBatch } from "../queue/expire.ts";
import { reported, type HealthReporter } from "../observe/health.ts";
import { withLazyCommit } from "../db/client.ts";
import type { MessageId, RecipientId, UserId } from "../mail/ids.ts";
import type { Enqueuer } from "../queue/enqueue.ts";
import type { DsnIntake } from "../bounce/notify.ts";
import type { Verp } from "../bounce/verp.ts";
import type { DkimSigner } from "../dkim/sign.ts";
import type { TrackingTokens } from "../tracking/token.ts";
import { DeliveryLoop, type ClaimSource, type LoopOptions } from "./loop.ts";
import { OutcomeRecorder } from "./outcome.ts";
import { Personalizer } from "./personalize.ts";
import { createResolver, lookupVia } from "./resolver.ts";
import type { Metrics } from "../observe/metrics.ts";
import { MxRouter, unverifiedCredentialRoutes } from "./route.ts";
import { throttleGauges, type ThrottleSnapshot } from "./throttle.ts";
import { SmtpTransport } from "./transport.ts";
import type { OwnAddress } from "./own-addresses.ts";

export interface DeliveryServiceDeps {
  config: Config;
  sqlite: Database;
  events: EventRecorder;
  enqueuer: Enqueuer;
  intake: DsnIntake;
  /** signs the VERP return paths of messages with bounce tracking */
  verp: Verp;
  /** click, open and unsubscribe tokens for each recipient's copy */
  tokens: TrackingTokens;
  /** the `[[dkim]]` keys: each copy is signed last */
  dkim: DkimSigner;
  log: Logger;
  /** told whether each claim and each settle commit reached the store (`/healthz`) */
  health?: { claim: HealthReporter; settle: HealthReporter };
  options?: LoopOptions;
  /** outpost's own SMTP listeners, never dialled for an MX host (runtime/start.ts, once they are bound) */
  isOwnAddress?: OwnAddress;
  /** port for MX hosts instead of 25 (tests: receivers on loopback high ports) */
  connectPort?: number;
  /** the runtime's registry: outcomes and the throttle's state */
  metrics?: Metrics;
  /** a user's name for the log lines */
  userName?: (id: UserId | null) => string | null;
}

export const THROTTLE_FILE = "throttle.json";
const PUBLISH_MS = 5_000;

export class DeliveryService {
  readonly name = "delivery";
  readonly loop: DeliveryLoop;
  private readonly outcomes: OutcomeRecorder;
  private readonly personalizer: Personalizer;
  private publisher: ReturnType<typeof setInterval>;

  constructor(private deps: DeliveryServiceDeps) {
    const { config, sqlite, events, enqueuer, intake, verp, tokens, dkim, log, health } = deps;
    const bounceDomain = config.tracking.bounce_domain;
    const queue = new QueueClaimer(sqlite);
    // serve holds the database's lock (runtime/lock.ts), so leases still in it belong to a process that died:
    // their mail goes out now, not when the leases run out
    const recovered = queue.recoverLeases();
    if (recovered > 0) log.info("leases_recovered", { count: recovered });
    this.outcomes = new OutcomeRecorder({
      sqlite, events, intake, delivery: config.delivery, bounceDomain, hostname: config.hostname, log,
      metrics: deps.metrics, userName: deps.userName,
    });
    // http.public_url and the bounce domain are read at start: a reload does not change them for mail in the queue
    this.personalizer = new Personalizer({ verp, bounceDomain, tokens, publicUrl: config.http.public_url, signer: dkim }, log, deps.metrics);
    this.loop = new DeliveryLoop({
      config: config.delivery,
      claimer: health ? new ReportedClaims(queue, health.claim) : queue,
      outcomes: this.outcomes,
      ...this.routing(config),
      log,
      options: deps.options,
      // settles finishing together share one commit (fsync): one per message would cap throughput at fsyncs/s
      // a settle lost to a power cut is tried again (a duplicate at worst): its commit need not wait for the disk
      batch: (fn) => reported(health?.settle, () => withLazyCommit(sqlite, () => sqlite.transaction(fn).immediate())),
      personalize: (message, recipients) => this.personalizer.outbound(message, recipients),
    }).start();
    if (deps.metrics) throttleGauges(deps.metrics, () => this.loop.throttle.snapshot());
    // new mail wakes the loop at once (no polling delay, no polling cost)
    enqueuer.onCommitted = () => this.loop.wake();
    this.publisher = setInterval(() => this.publish(), PUBLISH_MS);
    this.publisher.unref();
    for (const r of unverifiedCredentialRoutes(config.delivery.route)) {
      log.warn("route_credentials_unverified", {
        domain: r.domain, host: r.host, port: r.port, tls: r.tls,
        detail: `the password for ${r.host} goes over TLS whose certificate is not checked: a man in the middle can collect it; ` +
          `tls = "verify" (with tls_ca for a private CA) prevents that`,
      });
    }
    log.info("delivery_started", { sandbox: config.delivery.sandbox, concurrency: config.delivery.concurrency });
  }

  /**
   * A reload (SIGHUP): the new `[delivery]` and `[dns]` apply to mail routed and settled from now on; transactions
   * in flight finish as they started. The EHLO name (`hostname`) needs a restart.
   */
  reconfigure(next: Pick<Config, "delivery" | "dns">): void {
    const { router, transport } = this.routing({ ...next, hostname: this.deps.config.hostname });
    this.outcomes.reconfigure(next.delivery);
    this.loop.reconfigure(next.delivery, router, transport);
  }

  /** Where mail goes and how it gets there: a resolver (dns.servers) shared by the MX router and the transport. */
  private routing(config: Pick<Config, "delivery" | "dns" | "hostname">): { router: MxRouter; transport: SmtpTransport } {
    const resolver = createResolver(config.dns.servers);
    return {
      router: new MxRouter({ resolver, routes: config.delivery.route, tls: config.delivery.tls }),
      transport: new SmtpTransport({
        hostname: config.hostname, tls: config.delivery.tls, log: this.deps.log, lookup: lookupVia(resolver),
        isOwnAddress: this.deps.isOwnAddress, connectPort: this.deps.connectPort,
      }),
    };
  }

  /** Stops claiming at once; in-flight transactions get until `deadline` (ms since epoch), then are handed back. */
  async stop(deadline?: number): Promise<void> {
    clearInterval(this.publisher);
    this.deps.enqueuer.onCommitted = undefined;
    await this.loop.stop(deadline);
    this.publish();
  }

  private publish(): void {
    const file = join(this.deps.config.data_dir, THROTTLE_FILE);
    try {
      const body = JSON.stringify({ time: Date.now(), ...this.loop.throttle.snapshot() });
      writeFileSync(`${file}.tmp`, body, { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
    } catch (e) {
      this.deps.log.warn("throttle_publish_failed", { error: e });
    }
  }
}

/**
 * The queue's claims and lease extensions, each one reported, and failed message loads: the loop claims every few
 * seconds even when idle, a heartbeat of the store.
 */
class ReportedClaims implements ClaimSource {
  constructor(
    private queue: QueueClaimer,
    private health: HealthReporter,
  ) {}

  get walkUnfinished(): boolean {
    return this.queue.walkUnfinished;
  }

  claim(limit: number, leaseMs: number, exclude?: ReadonlySet<string> | SideExclusions): ClaimedRecipient[] {
    return reported(this.health, () => this.queue.claim(limit, leaseMs, exclude));
  }

  release(ids: RecipientId[], at?: number): void {
    this.queue.release(ids, at);
  }

  putBack(rows: readonly ClaimedRecipient[]): void {
    this.queue.putBack(rows);
  }

  extend(ids: RecipientId[], leaseMs: number): void {
    reported(this.health, () => this.queue.extend(ids, leaseMs));
  }

  nextDueAt(): number | null {
    return this.queue.nextDueAt();
  }

  claimExpired(domains: readonly string[], createdBefore: number, limit: number, leaseMs: number): ExpiredBatch {
    return reported(this.health, () => this.queue.claimExpired(domains, createdBefore, limit, leaseMs));
  }

  /** A read: its failure counts (a damaged file), its success does not clear a failing claim. */
  loadMessage(id: MessageId): StoredMessage | null {
    try {
      return this.queue.loadMessage(id);
    } catch (e) {
      this.health.failed(e);
      throw e;
    }
  }
}

/**
 * The throttle state the running `serve` last published (every few seconds), or null when none is there.
 * For `outpost queue` output: destinations listed have a reduced window, a back-off, connections in use, or are dead.
 */
export function readThrottleSnapshot(dataDir: string): (ThrottleSnapshot & { time: number }) | null {
  try {
    return JSON.parse(readFileSync(join(dataDir, THROTTLE_FILE), "utf8")) as ThrottleSnapshot & { time: number };
  } catch {
    return null;
  }
}
