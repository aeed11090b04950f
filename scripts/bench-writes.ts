import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import { benchExit } from './bench/interrupt.js';
import { lagVerdict } from './bench/hot-path-targets.js';
import { cpuMicros, percentile, send, startStack } from './bench/stack.js';

/**
 * Write throughput and write-to-read lag on the embedded stack (or with
 * READ_DB_URL, MariaDB as the read DB):
 *  1. POST /users for BENCH_SECONDS (30) at BENCH_CONNECTIONS (32) clients;
 *  2. BENCH_LAG_SAMPLES (500) writes from 4 clients, each timed from its 201 to
 *     the read API's 200 for the user with the write's Consistency-Token (the
 *     read waits in the read API until the row is there: read-your-writes);
 *  3. writes at a steady BENCH_LAG_RATE (500) a second for BENCH_LAG_SECONDS (10),
 *     each timed the same way, with each role's CPU per write (Linux /proc): at
 *     moderate rates batches are small and per-batch costs show.
 * One read per write: polling each new row from here instead (a GET every few
 * ms per write in flight) made this process a load of its own that grew with
 * the lag it measured. Prints the figures; asserts nothing (machines here are
 * shared and noisy).
 */
const seconds = Number(process.env.BENCH_SECONDS ?? 30);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const lagSamples = Number(process.env.BENCH_LAG_SAMPLES ?? 500);
const lagRate = Number(process.env.BENCH_LAG_RATE ?? 500);
const lagSeconds = Number(process.env.BENCH_LAG_SECONDS ?? 10);

/**
 * One registration, then one read of the user with its consistency token: the
 * milliseconds from the 201 to the read's 200 (undefined when either failed).
 */
async function writeThenRead(write: string, read: string, label: string): Promise<number | undefined> {
  const tag = randomUUID();
  const body = JSON.stringify({ name: `${label} ${tag}`, email: `${tag}@${label.toLowerCase()}.example.org` });
  const written = await send(`${write}/users`, 'POST', { 'content-type': 'application/json' }, body);
  if (written.status !== 201) return undefined;
  const { id, consistencyToken } = JSON.parse(written.body) as { id: string; consistencyToken: string };
  const acknowledged = performance.now();
  const answer = await send(`${read}/users/${id}`, 'GET', { 'consistency-token': consistencyToken });
  return answer.status === 200 ? performance.now() - acknowledged : undefined;
}

/** Writes at a steady rate (open loop: a slow answer does not slow the next write); each timed from its 201 to its read. */
async function lagAtRate(write: string, read: string, roles: Map<string, number>) {
  const cpuBefore = new Map([...roles].map(([role, pid]) => [role, cpuMicros(pid)]));
  const lags: number[] = [];
  let failed = 0;
  const one = async () => {
    const lag = await writeThenRead(write, read, 'Rate');
    if (lag === undefined) failed += 1;
    else lags.push(lag);
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
  const cpu = [...roles].map(([role, pid]) => `${role} ${Math.round((cpuMicros(pid) - cpuBefore.get(role)!) / (lagRate * lagSeconds))}`);
  const achieved = (lags.length + failed) / ((performance.now() - started) / 1000);
  lags.sort((a, b) => a - b);
  const p99 = percentile(lags, 99);
  console.log(
    `at ${lagRate} writes/s for ${lagSeconds} s (${lags.length} read back, ${failed} failed; issued at ${Math.round(achieved)}/s): ` +
      `201 -> read with its token answered p50 ${percentile(lags, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${lags[lags.length - 1]!.toFixed(1)} ms; ` +
      `CPU µs per write (and its read), by role: ${cpu.join(', ')}`,
  );
  console.log(lagVerdict({ writesPerSecond: lagRate, readDb: process.env.READ_DB_URL ? 'mariadb' : 'embedded', p99Ms: p99, failed }));
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
        const lag = await writeThenRead(stack.write, stack.read, 'Lag');
        if (lag === undefined) throw new Error('a write or its read-your-writes read failed');
        lags.push(lag);
      }
    };
    await Promise.all([0, 1, 2, 3].map(() => worker(Math.ceil(lagSamples / 4))));
    lags.sort((a, b) => a - b);
    console.log(
      `201 -> read with its token answered: p50 ${percentile(lags, 50).toFixed(1)} ms, p99 ${percentile(lags, 99).toFixed(1)} ms, ` +
        `max ${lags[lags.length - 1]!.toFixed(1)} ms over ${lags.length} writes`,
    );
    await lagAtRate(stack.write, stack.read, stack.roles());
  } finally {
    await stack.stop();
  }
}

main().catch((error: unknown) => benchExit(1, error));
