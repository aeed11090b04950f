import type { Registry } from 'prom-client';
import { counterOfTotal } from '../metrics.js';
import type { WriterStats } from './port.js';

/**
 * The embedded event store's writer, for Prometheus: read from its counts when
 * Prometheus scrapes (`EventStore.writerStats`), so nothing is paid per append.
 *
 * - `users_event_store_commits_total`: transactions the writer has run, each a
 *   group of appends with one fsync, committed or failed.
 * - `users_event_store_commit_appends_total`: the appends they held; divided by
 *   the commits, how well appends are grouped.
 * - `users_event_store_commit_seconds_total`: the wall time the writer has spent in
 *   them (BEGIN to COMMIT's return, waiting for the write lock included). Its rate
 *   is the share of the time the writer is busy: the writer is one thread, so near
 *   1 the store takes durable writes as fast as it can, and more load only queues.
 */
export function eventStoreWriterMetrics(registry: Registry, stats: () => WriterStats): void {
  const counter = (name: string, help: string, of: (s: WriterStats) => number) => counterOfTotal(registry, name, help, () => of(stats()));
  counter('users_event_store_commits_total', "Transactions the embedded event store's writer has run (a group of appends and one fsync each), committed or failed", (s) => s.groups);
  counter('users_event_store_commit_appends_total', 'Appends those transactions held; over the commits, how well appends are grouped', (s) => s.appends);
  counter(
    'users_event_store_commit_seconds_total',
    "Wall time the embedded event store's writer has spent in its transactions, in seconds; its rate is the share of the time the writer is busy (near 1: saturated)",
    (s) => s.seconds,
  );
}
