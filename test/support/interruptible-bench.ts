/**
 * A stand-in for a benchmark, for `bench-interrupt.int.test.ts`: it registers
 * cleanups the way the benchmarks do, says `ready`, then waits to be signalled.
 * Each cleanup says when it runs; SLOW_MS holds the last registered one (the first
 * to run) for that long; FAIL_DURING=1 has the benchmark fail while it cleans up.
 */
import { benchExit, onInterrupt } from '../../scripts/bench/interrupt.js';

const say = (line: string) => void process.stdout.write(`${line}\n`);
const slowMs = Number(process.env.SLOW_MS ?? 0);

onInterrupt(() => say('cleanup: first registered'));
const unregister = onInterrupt(() => say('cleanup: unregistered'));
unregister();
onInterrupt(() => {
  throw new Error('a cleanup that fails');
});
onInterrupt(async () => {
  say('cleanup: slow started');
  await new Promise((resolve) => setTimeout(resolve, slowMs));
  say('cleanup: slow done');
});
if (process.env.FAIL_DURING === '1') onInterrupt(() => benchExit(1, new Error("the benchmark's own failure")));
process.on('exit', (code) => say(`exit ${code}`));
setInterval(() => {}, 60_000);
say('ready');
