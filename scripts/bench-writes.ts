import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import { percentile, startStack } from './bench/stack.js';

/**
 * Write throughput and write-to-read lag on the embedded stack (or with
 * READ_DB_URL, MariaDB as the read DB):
 *  1. POST /users for BENCH_SECONDS (30) at BENCH_CONNECTIONS (32) clients;
 *  2. BENCH_LAG_SAMPLES (500) writes from 4 clients, each timed from its 201 to
 *     the row answering 200 on the read API (polled every 2 ms).
 * Prints the figures; asserts nothing (machines here are shared and noisy).
 */
const seconds = Number(process.env.BENCH_SECONDS ?? 30);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const lagSamples = Number(process.env.BENCH_LAG_SAMPLES ?? 500);

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
  } finally {
    await stack.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
