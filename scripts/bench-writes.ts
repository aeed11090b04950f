import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import { percentile, startStack } from './bench/stack.js';

/**
 * Write throughput and write-to-read lag on the embedded stack (or with
 * READ_DB_URL, MariaDB as the read DB):
 *  1. POST /users for BENCH_SECONDS (30) at BENCH_CONNECTIONS (32) clients;
 *  2. BENCH_LAG_SAMPLES (500) writes from 4 clients, each timed from its 201 to
 *     the row answering 200 on the read API (polled every 2 ms);
 *  3. writes at a steady BENCH_LAG_RATE (500) a second for BENCH_LAG_SECONDS (10),
 *     each timed the same way (polled every 5 ms, so figures may be up to 5 ms high).
 * Prints the figures; asserts nothing (machines here are shared and noisy).
 */
const seconds = Number(process.env.BENCH_SECONDS ?? 30);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const lagSamples = Number(process.env.BENCH_LAG_SAMPLES ?? 500);
const lagRate = Number(process.env.BENCH_LAG_RATE ?? 500);
const lagSeconds = Number(process.env.BENCH_LAG_SECONDS ?? 10);

/** Writes at a steady rate (open loop: a slow answer does not slow the next write); each timed from its 201 to its row. */
async function lagAtRate(write: string, read: string) {
  const lags: number[] = [];
  let failed = 0;
  const one = async () => {
    const tag = randomUUID();
    const response = await fetch(`${write}/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: `Rate ${tag}`, email: `${tag}@rate.example.org` }),
    });
    if (response.status !== 201) return void (failed += 1);
    const { id } = (await response.json()) as { id: string };
    const acknowledged = performance.now();
    while ((await fetch(`${read}/users/${id}`)).status !== 200) await new Promise((resolve) => setTimeout(resolve, 5));
    lags.push(performance.now() - acknowledged);
  };
  const started = performance.now();
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < lagRate * lagSeconds; i++) {
    const due = started + (i * 1000) / lagRate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    inFlight.push(one());
  }
  await Promise.all(inFlight);
  const achieved = (lags.length + failed) / ((performance.now() - started) / 1000);
  lags.sort((a, b) => a - b);
  console.log(
    `at ${lagRate} writes/s for ${lagSeconds} s (${lags.length} acknowledged, ${failed} not; issued at ${Math.round(achieved)}/s): ` +
      `201 -> row visible p50 ${percentile(lags, 50).toFixed(1)} ms, p99 ${percentile(lags, 99).toFixed(1)} ms, max ${lags[lags.length - 1]!.toFixed(1)} ms`,
  );
}

async function main() {
  const stack = await startStack();
  try {
    const run = (await autocannon({
      url: stack.write,
      connections,
      duration: seconds,
      requests: [
        {
          method: 'POST',
          path: '/users',
          headers: { 'content-type': 'application/json' },
          setupRequest: (request) => {
            const tag = randomUUID();
            return { ...request, body: JSON.stringify({ name: `Bench ${tag}`, email: `${tag}@bench.example.org` }) };
          },
        },
      ],
    }));
    const ok = run['2xx'];
    console.log(
      `writes: ${(ok / run.duration).toFixed(0)} commands/s (201s: ${ok}, non-2xx: ${run.non2xx}, errors: ${run.errors}) ` +
        `over ${run.duration.toFixed(1)} s at ${connections} clients; latency p50 ${run.latency.p50} ms, p99 ${run.latency.p99} ms`,
    );

    const lags: number[] = [];
    const worker = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const tag = randomUUID();
        const response = await fetch(`${stack.write}/users`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: `Lag ${tag}`, email: `${tag}@lag.example.org` }),
        });
        const { id } = (await response.json()) as { id: string };
        const acknowledged = performance.now();
        while ((await fetch(`${stack.read}/users/${id}`)).status !== 200) {
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
        lags.push(performance.now() - acknowledged);
      }
    };
    await Promise.all([0, 1, 2, 3].map(() => worker(Math.ceil(lagSamples / 4))));
    lags.sort((a, b) => a - b);
    console.log(
      `201 -> row visible: p50 ${percentile(lags, 50).toFixed(1)} ms, p99 ${percentile(lags, 99).toFixed(1)} ms, ` +
        `max ${lags[lags.length - 1]!.toFixed(1)} ms over ${lags.length} writes`,
    );
    await lagAtRate(stack.write, stack.read);
  } finally {
    await stack.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
