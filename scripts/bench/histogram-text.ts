/**
 * A Prometheus histogram read from a role's `/metrics` text by the benchmarks: its
 * cumulative buckets at one scrape, and what was observed between two scrapes.
 */

/** One cumulative bucket: its upper bound (`le`, Infinity for `+Inf`) and the observations at or under it. */
export type Bucket = readonly [le: number, count: number];

/** The buckets of histogram `name` in Prometheus text, in order of bound; empty when it is not there. */
export function histogramBuckets(text: string, name: string): Bucket[] {
  const line = new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\} (\\S+)$`, 'gm');
  return [...text.matchAll(line)]
    .map(([, le, count]): Bucket => [le === '+Inf' ? Infinity : Number(le), Number(count)])
    .sort((a, b) => a[0] - b[0]);
}

/** Observations between two scrapes of the same histogram, bucket by bucket (still cumulative). */
function between(before: readonly Bucket[], after: readonly Bucket[]): Bucket[] {
  const earlier = new Map(before);
  return after.map(([le, count]) => [le, count - (earlier.get(le) ?? 0)]);
}

/**
 * The upper bound of the bucket that holds quantile `q` (0 to 1) of what was observed
 * between the scrapes, as Prometheus' `histogram_quantile` would bound it (no
 * interpolation: the bound is what the buckets can tell); undefined when nothing was.
 */
export function quantileBound(before: readonly Bucket[], after: readonly Bucket[], q: number): number | undefined {
  const observed = between(before, after);
  const total = observed[observed.length - 1]?.[1] ?? 0;
  if (total <= 0) return undefined;
  return observed.find(([, count]) => count >= q * total)?.[0];
}

/** The share of what was observed between the scrapes above `bound` (one of the bucket bounds); undefined when nothing was. */
export function shareAbove(before: readonly Bucket[], after: readonly Bucket[], bound: number): number | undefined {
  const observed = between(before, after);
  const total = observed[observed.length - 1]?.[1] ?? 0;
  const atOrUnder = observed.find(([le]) => le === bound)?.[1];
  if (total <= 0 || atOrUnder === undefined) return undefined;
  return (total - atOrUnder) / total;
}
