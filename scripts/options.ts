/**
 * An integer option or setting of an operator script: digits only (no signs,
 * exponents or hex), within bounds; `fallback` when it is absent or empty.
 * Throws a one-line message naming the option, for the script's usage error.
 */
export function integerOption(
  name: string,
  value: string | undefined,
  { fallback, min = 1, max }: { fallback: number; min?: number; max?: number },
): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || (max !== undefined && n > max)) {
    const range = max === undefined ? `>= ${min}` : `from ${min} to ${max}`;
    throw new Error(`${name} must be an integer ${range}, got ${JSON.stringify(value)}`);
  }
  return n;
}
