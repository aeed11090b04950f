import client, { type Registry } from 'prom-client';
import type { RebuildPhase, RebuildProgress } from '../../projector/rebuild.js';

/**
 * A rebuild's progress as metrics, for Prometheus to scrape while it runs
 * (`REBUILD_METRICS_PORT`): the phase it is in, the events replayed so far and
 * about how many the replay holds, so a dashboard can show how far it got.
 */
export function rebuildMetrics(registry: Registry) {
  let latest: RebuildProgress | undefined;
  const startedAt = Date.now();
  new client.Gauge({
    name: 'users_rebuild_phase',
    help: 'The phase the running rebuild is in: 1 for the current phase (the others have no series)',
    labelNames: ['phase'] as const,
    registers: [registry],
    collect() {
      this.reset();
      if (latest) this.set({ phase: latest.phase }, 1);
    },
  });
  new client.Gauge({
    name: 'users_rebuild_events_replayed',
    help: 'Events the running rebuild has read from the log so far',
    registers: [registry],
    collect() {
      this.set(latest?.events ?? 0);
    },
  });
  new client.Gauge({
    name: 'users_rebuild_events_expected',
    help: 'About how many events the running rebuild\'s replay holds (sampled; 0 while unknown)',
    registers: [registry],
    collect() {
      this.set(latest?.expected ?? 0);
    },
  });
  new client.Gauge({
    name: 'users_rebuild_duration_seconds',
    help: 'Seconds since the running rebuild started',
    registers: [registry],
    collect() {
      this.set((Date.now() - startedAt) / 1000);
    },
  });
  return {
    update(progress: RebuildProgress) {
      latest = progress;
    },
    phase: (): RebuildPhase | undefined => latest?.phase,
  };
}
