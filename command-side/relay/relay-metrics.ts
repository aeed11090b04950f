import client, { type Registry } from 'prom-client';
import type { EventStore } from '../../shared/event-store/port.js';
import type { Readiness } from '../../shared/metrics.js';
import type { RelayStatus } from './relay.js';

const batchBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The relay's metrics, the first hop's lag among them:
 * `users_relay_lag_seconds` is, while a batch waits for the broker (an outage's
 * retries included), the age of its oldest event; else 0 while the relay is caught
 * up with the log, and how long ago the last event the broker acknowledged was
 * recorded while it is not. `users_relay_lag_events` is the log head minus the
 * resume point, exported where log positions count events (the embedded store;
 * EventStoreDB's positions are byte offsets, so there the lag in seconds is the
 * measure); 0 while the relay is caught up with nothing unacknowledged (the events
 * after the resume point are then the relay's own lease records, which it does not
 * publish), and 0 on a relay that is not the publisher.
 */
export function relayMetrics(registry: Registry, options: { store: EventStore; positionsCountEvents: boolean }) {
  let status: () => Readonly<RelayStatus> = () => ({ role: 'starting', live: false, published: 0 });
  const published = new client.Counter({
    name: 'users_relay_events_published_total',
    help: 'Events the broker acknowledged, since the relay started',
    registers: [registry],
  });
  const duration = new client.Histogram({
    name: 'users_relay_batch_duration_seconds',
    help: 'Time to publish one batch until the broker acknowledged it, retries included, in seconds',
    buckets: batchBuckets,
    registers: [registry],
  });
  new client.Gauge({
    name: 'users_relay_publishing',
    help: '1 while this relay holds the single-publisher lease and publishes, 0 on standby',
    registers: [registry],
    collect() {
      this.set(status().role === 'publishing' ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'users_relay_lag_seconds',
    help: 'How far behind the log the broker is: 0 while the relay is caught up, else the age of the last event the broker acknowledged',
    registers: [registry],
    collect() {
      const current = status();
      const since = current.role !== 'publishing' ? undefined : (current.pendingSince ?? (current.live ? undefined : current.lastPublishedAt));
      this.set(since === undefined ? 0 : Math.max(0, (Date.now() - since) / 1000));
    },
  });
  const headPosition = options.store.headPosition?.bind(options.store);
  if (options.positionsCountEvents && headPosition) {
    new client.Gauge({
      name: 'users_relay_lag_events',
      help: 'Events in the log after the relay\'s resume point (the embedded store only; not all of them are user events)',
      registers: [registry],
      async collect() {
        const current = status();
        if (current.role !== 'publishing' || (current.live && current.pendingSince === undefined)) {
          this.set(0);
          return;
        }
        const head = await headPosition().catch(() => undefined);
        if (head !== undefined) this.set(Math.max(0, Number(head - BigInt(current.position ?? 0))));
      },
    });
  }

  return {
    watch(relay: { status(): Readonly<RelayStatus> }) {
      status = () => relay.status();
    },
    onPublished(messages: number, seconds: number) {
      published.inc(messages);
      duration.observe(seconds);
    },
    /** Ready: the relay publishes or stands by (not starting, not stopped) and the event store answers. */
    async readiness(): Promise<Readiness> {
      const { role, live, position } = status();
      let eventStore = 'up';
      try {
        await options.store.readAll({ maxCount: 1 });
      } catch {
        eventStore = 'down';
      }
      const ready = (role === 'publishing' || role === 'standby') && eventStore === 'up';
      return { ready, detail: { role, live, position, eventStore } };
    },
  };
}
