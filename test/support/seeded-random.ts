/** A repeatable pseudo-random source, so a fuzz or chaos run can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  // mulberry32: small, fast, good enough to pick cases.
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
