/**
 * Prometheus text (a role's `/metrics`) as the benchmarks and the tests read it: one
 * series' value, and a histogram's cumulative buckets with what was observed
 * between two scrapes.
 */

/** One series line: its name, its labels and its value. */
interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function seriesIn(text: string): Series[] {
  const found: Series[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...(match[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    found.push({ name: match[1]!, labels, value: Number(match[4]) });
  }
  return found;
}

/** The value of the first series named `name` with (at least) these labels, or undefined when there is none. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return seriesIn(text).find((s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value))?.value;
}

/** One cumulative bucket: its upper bound (`le`, Infinity for `+Inf`) and the observations at or under it. */
export type Bucket = readonly [le: number, count: number];

/** The buckets of histogram `name` in Prometheus text, in order of bound; empty when it is not there. */
export function histogramBuckets(text: string, name: string): Bucket[] {
  return seriesIn(text)
    .filter((s) => s.name === `${name}_bucket` && s.labels.le !== undefined)
    .map((s): Bucket => [s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), s.value])
    .sort((a, b) => a[0] - b[0]);
}

/**
 * Observations between two scrapes of the same histogram, bucket by bucket (still
 * cumulative), with their total (the last bucket's, `+Inf`).
 */
function between(before: readonly Bucket[], after: readonly Bucket[]): { observed: Bucket[]; total: number } {
  const earlier = new Map(before);
  const observed = after.map(([le, count]): Bucket => [le, count - (earlier.get(le) ?? 0)]);
  return { observed, total: observed[observed.length - 1]?.[1] ?? 0 };
}

/**
 * The upper bound of the bucket that holds quantile `q` (0 to 1) of what was observed
 * between the scrapes, as Prometheus' `histogram_quantile` would bound it (no
 * interpolation: the bound is what the buckets can tell); undefined when nothing was.
 */
export function quantileBound(before: readonly Bucket[], after: readonly Bucket[], q: number): number | undefined {
  const { observed, total } = between(before, after);
  if (total <= 0) return undefined;
  return observed.find(([, count]) => count >= q * total)?.[0];
}

/** The share of what was observed between the scrapes above `bound` (one of the bucket bounds); undefined when nothing was. */
export function shareAbove(before: readonly Bucket[], after: readonly Bucket[], bound: number): number | undefined {
  const { observed, total } = between(before, after);
  const atOrUnder = observed.find(([le]) => le === bound)?.[1];
  if (total <= 0 || atOrUnder === undefined) return undefined;
  return (total - atOrUnder) / total;
}
