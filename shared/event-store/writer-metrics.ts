import client, { type Registry } from 'prom-client';
import { counterOfTotal } from '../metrics.js';
import type { EventStore, WriterStats } from './port.js';

/**
 * Commit times in seconds: a group's transaction takes a fraction of a millisecond
 * on an idle fast disk, a few milliseconds under load or when it also checkpoints,
 * up to the write lock's busy timeout (5 s) when another process holds the file.
 */
export const commitDurationBuckets = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1, 5];

/**
 * The embedded event store's writer, for Prometheus.
 *
 * Read from its counts when Prometheus scrapes (`EventStore.writerStats`), so
 * nothing is paid per append:
 * - `users_event_store_commits_total`: transactions the writer has run, each a
 *   group of appends with one fsync, committed or failed.
 * - `users_event_store_commit_appends_total`: the appends they held; divided by
 *   the commits, how well appends are grouped.
 * - `users_event_store_commit_seconds_total`: the wall time the writer has spent in
 *   them (BEGIN to COMMIT's return, waiting for the write lock included). Its rate
 *   is the share of the time the writer is busy: the writer is one thread, so near
 *   1 the store takes durable writes as fast as it can, and more load only queues.
 *
 * Observed once per transaction (`EventStore.observeCommits`), when the store
 * tells them:
 * - `users_event_store_commit_duration_seconds`: the same transactions' times as a
 *   histogram (its `_count` and `_sum` are the first and last counters above). The
 *   mean hides what sets a write's tail: the commit that also checkpoints (copies
 *   the log's pages back into the database file and syncs it) takes several times
 *   the others, and every append in its group, and in the group queued behind it,
 *   waits for it.
 *
 * Nothing when the store has no writer of its own (in memory, EventStoreDB).
 * Returns what stops the histogram's observing (the app calls it when it closes).
 */
export function eventStoreWriterMetrics(registry: Registry, store: Pick<EventStore, 'writerStats' | 'observeCommits'>): () => void {
  const stats = store.writerStats?.bind(store);
  if (!stats) return () => {};
  const counter = (name: string, help: string, of: (s: WriterStats) => number) => counterOfTotal(registry, name, help, () => of(stats()));
  counter('users_event_store_commits_total', "Transactions the embedded event store's writer has run (a group of appends and one fsync each), committed or failed", (s) => s.groups);
  counter('users_event_store_commit_appends_total', 'Appends those transactions held; over the commits, how well appends are grouped', (s) => s.appends);
  counter(
    'users_event_store_commit_seconds_total',
    "Wall time the embedded event store's writer has spent in its transactions, in seconds; its rate is the share of the time the writer is busy (near 1: saturated)",
    (s) => s.seconds,
  );
  if (!store.observeCommits) return () => {};
  const duration = new client.Histogram({
    name: 'users_event_store_commit_duration_seconds',
    help: "Each transaction of the embedded event store's writer (a group of appends, one fsync; committed or failed): its wall time in seconds. The slow ones (a checkpoint inside the commit) set the writes' tail",
    buckets: commitDurationBuckets,
    registers: [registry],
  });
  return store.observeCommits((seconds) => duration.observe(seconds));
}
