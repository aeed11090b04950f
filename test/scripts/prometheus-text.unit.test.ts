import t from 'tap';
import { histogramBuckets, quantileBound, sample, shareAbove } from '../../scripts/bench/prometheus-text.js';

const scrape = (counts: number[]) =>
  [
    '# HELP users_event_store_commit_duration_seconds commit times',
    '# TYPE users_event_store_commit_duration_seconds histogram',
    ...['0.001', '0.005', '0.01', '+Inf'].map((le, i) => `users_event_store_commit_duration_seconds_bucket{le="${le}",role="command-side"} ${counts[i]}`),
    `users_event_store_commit_duration_seconds_sum{role="command-side"} 1.5`,
    `users_event_store_commit_duration_seconds_count{role="command-side"} ${counts[3]}`,
    'users_event_store_commits_total{role="command-side"} 99',
  ].join('\n');

void t.test('one series from Prometheus text, by name and labels', async (t) => {
  const text = scrape([1, 2, 3, 4]);
  t.equal(sample(text, 'users_event_store_commits_total'), 99);
  t.equal(sample(text, 'users_event_store_commits_total', { role: 'command-side' }), 99, 'with its label');
  t.equal(sample(text, 'users_event_store_commits_total', { role: 'projector' }), undefined, 'another label value: none');
  t.equal(sample(text, 'users_event_store_commit_duration_seconds_bucket', { le: '0.005' }), 2, 'one of several labels');
  t.equal(sample(text, 'users_event_store_commit_duration_seconds'), undefined, 'the HELP and TYPE lines are not series');
  t.equal(sample('up 1\nup_total 2', 'up'), 1, 'no labels at all');
});

void t.test("a histogram's buckets from Prometheus text", async (t) => {
  t.same(histogramBuckets(scrape([1, 2, 3, 4]), 'users_event_store_commit_duration_seconds'), [
    [0.001, 1],
    [0.005, 2],
    [0.01, 3],
    [Infinity, 4],
  ]);
  t.same(histogramBuckets(scrape([1, 2, 3, 4]), 'users_other_seconds'), [], 'another name: none');
  t.same(histogramBuckets('x_bucket{le="0.5"} 3\nx_bucket{role="a",le="+Inf"} 4', 'x'), [[0.5, 3], [Infinity, 4]], 'le first or after other labels');
});

void t.test('what was observed between two scrapes', async (t) => {
  const name = 'users_event_store_commit_duration_seconds';
  const before = histogramBuckets(scrape([10, 20, 20, 20]), name);
  // Since then: 80 at or under 1 ms, 10 more under 5 ms, 9 under 10 ms, 1 above.
  const after = histogramBuckets(scrape([90, 110, 119, 120]), name);
  t.equal(quantileBound(before, after, 0.5), 0.001, 'the median in the first bucket');
  t.equal(quantileBound(before, after, 0.9), 0.005, '90 of 100 at or under 5 ms');
  t.equal(quantileBound(before, after, 0.99), 0.01, '99 of 100 at or under 10 ms');
  t.equal(quantileBound(before, after, 1), Infinity, 'the slowest above every bound');
  t.equal(shareAbove(before, after, 0.005), 0.1, '10 of 100 above 5 ms');
  t.equal(shareAbove(before, after, 0.002), undefined, 'not a bucket bound: no answer');
  t.equal(quantileBound(after, after, 0.99), undefined, 'nothing observed: no answer');
  t.equal(shareAbove(after, after, 0.005), undefined);
  t.equal(quantileBound([], after, 0.5), 0.001, 'from no earlier scrape: everything counts');
});
