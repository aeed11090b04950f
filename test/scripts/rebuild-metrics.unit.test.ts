import t from 'tap';
import { rebuildMetrics } from '../../scripts/rebuild/rebuild-metrics.js';
import { createMetricsRegistry } from '../../shared/metrics.js';

void t.test('a running rebuild\'s progress as metrics: its phase, events replayed and expected', async (t) => {
  const registry = createMetricsRegistry('rebuild');
  const metrics = rebuildMetrics(registry);
  const value = async (name: string, labels: Record<string, string> = {}) =>
    (await registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;

  t.equal(await value('users_rebuild_events_replayed'), 0, 'nothing before the first report');
  t.equal(await value('users_rebuild_phase', { phase: 'replaying' }), undefined);
  metrics.update({ phase: 'replaying', events: 1200, position: undefined, expected: 5000 });
  t.equal(await value('users_rebuild_events_replayed'), 1200);
  t.equal(await value('users_rebuild_events_expected'), 5000);
  t.equal(await value('users_rebuild_phase', { phase: 'replaying' }), 1);
  metrics.update({ phase: 'swapping', events: 5003, position: 9000n });
  t.equal(await value('users_rebuild_phase', { phase: 'swapping' }), 1);
  t.equal(await value('users_rebuild_phase', { phase: 'replaying' }), undefined, 'only the current phase is reported');
  t.equal(await value('users_rebuild_events_expected'), 0, 'no estimate once the replay stream after stream is over');
  t.ok((await value('users_rebuild_duration_seconds'))! >= 0);
  t.match(await registry.metrics(), /users_rebuild_events_replayed\{role="rebuild"\} 5003/);
});
