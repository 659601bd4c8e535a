/**
 * @module observe/metrics — one Prometheus registry per running outpost (prom-client's home). Each module declares
 * the metrics it counts on the registry it is handed, and `/metrics` renders the registry in the text format.
 *
 * Not prom-client's global default registry: tests run several outposts in one process, and each must count
 * only its own mail. Names follow Prometheus conventions: `outpost_` prefix, base units (`_seconds`, `_bytes`),
 * `_total` for counters.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "./log.ts";

export type { Counter, Gauge, Histogram };

interface Declaration<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
}

/** Label values a counter starts with at 0, so a rate() over it works from its first event on. */
type Initial<L extends string> = ReadonlyArray<Partial<Record<L, string>>>;

export class Metrics {
  private readonly registry = new Registry();

  /** `log`: where a gauge whose reading fails is reported (the scrape goes on without it) */
  constructor(private readonly log?: Logger) {}

  /** the Content-Type of `render()`'s text (exposition format 0.0.4) */
  readonly contentType: string = this.registry.contentType;

  /**
   * A counter. Declaring a name again returns the first declaration's metric (for every kind): a metric that two
   * modules move (a recipient's final status is reached in intake and in delivery) is declared by one function
   * both call, and a second instance of a service on one registry counts into the same series.
   */
  counter<L extends string = never>(d: Declaration<L> & { initial?: Initial<L> }): Counter<L> {
    const known = this.known(d.name, Counter);
    if (known) return known as Counter<L>;
    const c = new Counter<L>({ name: d.name, help: d.help, labelNames: d.labelNames ?? [], registers: [this.registry] });
    for (const labels of d.initial ?? []) c.inc(labels, 0);
    return c;
  }

  /**
   * A gauge; with `collect`, its value is read at each scrape (a state held elsewhere: the queue's rows, the
   * throttle). A `collect` that throws is logged and leaves the gauge without samples for that scrape (NaN for a
   * gauge without labels, which prom-client would otherwise show as 0), and the rest render.
   */
  gauge<L extends string = never>(d: Declaration<L> & { collect?: (gauge: Gauge<L>) => void }): Gauge<L> {
    const known = this.known(d.name, Gauge);
    if (known) return known as Gauge<L>;
    const read = d.collect;
    const log = this.log;
    const unlabelled = (d.labelNames ?? []).length === 0;
    return new Gauge<L>({
      name: d.name,
      help: d.help,
      labelNames: d.labelNames ?? [],
      registers: [this.registry],
      ...(read ? {
        collect(this: Gauge<L>) {
          this.reset();
          try {
            read(this);
          } catch (e) {
            this.reset();
            // a gauge without labels renders 0 after a reset, which would read as a true value (an empty queue)
            if (unlabelled) (this as Gauge).set(NaN);
            log?.error("metrics_collect_failed", { metric: d.name, error: e });
          }
        },
      } : {}),
    });
  }

  histogram<L extends string = never>(d: Declaration<L> & { buckets: number[] }): Histogram<L> {
    const known = this.known(d.name, Histogram);
    if (known) return known as Histogram<L>;
    return new Histogram<L>({ name: d.name, help: d.help, labelNames: d.labelNames ?? [], buckets: d.buckets, registers: [this.registry] });
  }

  /** The metric already declared under `name`; a name declared as another kind is a programming error. */
  private known<K extends typeof Counter | typeof Gauge | typeof Histogram>(name: string, kind: K): InstanceType<K> | null {
    const m = this.registry.getSingleMetric(name);
    if (m === undefined) return null;
    if (!(m instanceof kind)) throw new Error(`metric ${name} is declared twice, as different kinds`);
    return m as InstanceType<K>;
  }

  /** The Prometheus text exposition of every metric declared, with HELP and TYPE lines. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
