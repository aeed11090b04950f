/**
 * A value made once per count and kept: the SQL text (or prepared statement) for
 * a batch of `count` rows or ids. Batches repeat the same few sizes, so each
 * later batch only looks its value up.
 */
export function perCount<T>(make: (count: number) => T): (count: number) => T {
  const made: T[] = [];
  return (count) => (made[count] ??= make(count));
}
