import t from 'tap';
import { integerOption } from '../../scripts/options.js';

void t.test('integer options: digits within bounds, the fallback when absent or empty', async (t) => {
  t.equal(integerOption('--n', undefined, { fallback: 7 }), 7);
  t.equal(integerOption('--n', '', { fallback: 7 }), 7);
  t.equal(integerOption('--n', '42', { fallback: 7 }), 42);
  t.equal(integerOption('--n', '0', { fallback: 7, min: 0 }), 0);
  t.equal(integerOption('--n', '10000', { fallback: 7, max: 10_000 }), 10_000);
});

void t.test('integer options: anything else is refused with the option named', async (t) => {
  for (const value of ['0', '-1', '1.5', '1e3', '0x10', ' 5', 'five']) {
    t.throws(() => integerOption('--n', value, { fallback: 7 }), { message: `--n must be an integer >= 1, got ${JSON.stringify(value)}` }, value);
  }
  t.throws(() => integerOption('--limit', '10001', { fallback: 100, max: 10_000 }), { message: '--limit must be an integer from 1 to 10000, got "10001"' });
  t.throws(() => integerOption('REBUILD_PAUSE_MS', '99', { fallback: 30_000, min: 100 }), { message: /REBUILD_PAUSE_MS must be an integer >= 100/ });
});
