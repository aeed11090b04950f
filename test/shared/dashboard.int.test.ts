import { readFileSync } from 'node:fs';
import t from 'tap';
import type { Registry } from 'prom-client';
import { buildCommandApp } from '../../command-side/app.js';
import { relayMetrics } from '../../command-side/relay/relay-metrics.js';
import { projectorMetrics } from '../../projector/projector-metrics.js';
import { buildQueryApp } from '../../query-side/app.js';
import { createMetricsRegistry } from '../../shared/metrics.js';
import { openEmbeddedStore } from '../support/event-stores.js';
import { readDbsUnderTest } from '../support/read-dbs.js';
import { commandsOver } from '../support/seed.js';

/**
 * The provisioned Grafana dashboard (ops/grafana/dashboards) may only query
 * metrics the service exports: a renamed metric must not leave a panel empty.
 */
const dashboard = JSON.parse(readFileSync(new URL('../../ops/grafana/dashboards/users-service.json', import.meta.url), 'utf8')) as {
  panels: { title: string; targets: { expr: string }[] }[];
};

/** The metric names a PromQL expression selects: identifiers that are not functions, grouping labels, matchers or ranges. */
function metricNamesIn(expr: string): string[] {
  const bare = expr
    .replace(/\b(by|without)\s*\([^)]*\)/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ');
  return [...bare.matchAll(/[a-zA-Z_:][\w:]*(?=\s*(\(|$|[^\w:(]))/g)]
    .filter((match) => match[1] !== '(')
    .map((match) => match[0]);
}

async function exported(registries: Registry[]): Promise<Set<string>> {
  const names = new Set<string>();
  for (const registry of registries) {
    for (const metric of await registry.getMetricsAsJSON()) {
      names.add(metric.name);
      if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_count', '_sum']) names.add(`${metric.name}${suffix}`);
    }
  }
  return names;
}

void t.test('every metric the dashboard queries is one the service exports', async (t) => {
  // The embedded store: its writer's metrics are on the dashboard too.
  const store = await openEmbeddedStore(t);
  const registries = ['command-side', 'query-side', 'projector', 'relay'].map((role) => createMetricsRegistry(role));
  const [command, query, projector, relay] = registries as [Registry, Registry, Registry, Registry];
  const writeApp = buildCommandApp({ commands: commandsOver(store), store, metrics: command });
  t.teardown(() => writeApp.close());
  const { db } = await readDbsUnderTest[0]!.open(t);
  const readApp = buildQueryApp({ db, consistencyWaitMs: 100, metrics: query });
  t.teardown(() => readApp.close());
  await Promise.all([writeApp.ready(), readApp.ready()]);
  // Histogram series exist once observed.
  await writeApp.inject({ url: '/health/live' });
  projectorMetrics(projector, { headPosition: () => store.headPosition!() });
  relayMetrics(relay, { store, positionsCountEvents: true });
  const names = await exported(registries);

  const queried = dashboard.panels.flatMap((panel) => panel.targets.map((target) => ({ panel: panel.title, names: metricNamesIn(target.expr) })));
  t.ok(queried.length >= 8, `${queried.length} queries read`);
  for (const { panel, names: used } of queried) {
    t.ok(used.length > 0, `"${panel}" names a metric`);
    for (const name of used) t.ok(names.has(name), `"${panel}": ${name} is exported`);
  }
  t.same(metricNamesIn('sum by (role, le) (rate(users_x_bucket{a="b"}[1m])) / users_y'), ['users_x_bucket', 'users_y'], 'the parser itself');
});
