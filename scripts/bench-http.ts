import autocannon from 'autocannon';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { runnable } from './bench/compiled.js';
import { benchExit, onInterrupt } from './bench/interrupt.js';
import { histogramBuckets, quantileBound, sample, shareAbove, type Bucket } from './bench/prometheus-text.js';
import { commitDurationBuckets } from '../shared/event-store/writer-metrics.js';
import { cores, cpuMicros, dropDatabases, localMariaDbServer, machineIdleSeconds, mainThreadCpuMicros, median, startChild, startStack, stopChild, untilHealthy } from './bench/stack.js';
import { freePort } from './free-port.js';
import { targets, targetVerdicts, type Path, type ReadDb } from './bench/hot-path-targets.js';

/**
 * The request paths against bare Fastify, measured in the same run:
 *  - a bare Fastify process (hello-world GET, JSON-echo POST) as the baseline;
 *  - `npm start`'s process tree on fresh data, with the embedded read DB and with
 *    MariaDB (`MARIADB_URL`, default mysql://root@127.0.0.1:3306, a fresh
 *    `queries_bench_http_<random>` database dropped afterwards; BENCH_MARIADB=0
 *    leaves it out).
 * Each path runs BENCH_SECONDS (10) at BENCH_CONNECTIONS (32) after a 2 s warm-up,
 * BENCH_RUNS (3) times, bare and service in turn (the lookup's and the list's runs
 * alternate; the registrations' come after both); the medians are printed with
 * each path's ratio to its bare counterpart and the CPU each role process (command
 * side, projector, query side) spent per answered request over the timed part, from
 * /proc: for a registration that is its whole cost, the projection included; and
 * the bare app's CPU per request the same way, a figure the machine's speed of the
 * hour moves less than req/s; and the load generator's (this process), since it
 * shares the cores. From those, each path's CPU budget: the most CPU per request,
 * load generator included, at which the machine's cores could serve its target
 * ratio of this run's bare pace, beside what the service's requests cost. And
 * each Node process's event loop (its main thread) per request, with the share of
 * the cores the run left idle: one thread uses at most one core, so the busiest
 * loop caps a path whatever the cores, and idle cores show a path waiting rather
 * than computing. POST /users' runs also give the event store's writer thread's
 * busy share, appends per commit and its commits' times (the bucket bound under
 * which 99% fell, the share over 5 ms: the commits that set the writes' tail), from
 * the write API's /metrics (`users_event_store_*`, on the embedded store).
 * The service, the bare app and the references run compiled, as production runs
 * them (`bench/compiled.ts`; BENCH_SOURCES=1: through tsx). Settings changed from `npm start`'s
 * defaults: fresh DATA_DIR and ports (RATE_LIMIT_PER_MINUTE=0, the default, is set
 * explicitly: the load comes from one address); logs at the default level (info)
 * go to a file.
 * POST /users also beside three references, each run after it in each run, in a
 * process of its own with no projector: a durable echo (`bench/durable-echo.ts`:
 * the JSON echo that first appends the body as one event to the embedded store,
 * synchronous=FULL), the least a 2xx that means "on disk" costs on this store; and
 * the write API in memory (`bench/write-api-in-memory.ts`: the same app over
 * in-memory stores, started afresh for each run), the least this request path
 * costs whatever the store; and the write API with no work
 * (`bench/write-api-no-work.ts`: the same app around commands that answer at
 * once), the least its HTTP layer costs. Each one's ratio to the echo bounds what any
 * registration could reach from its side; POST /users' ratio to each is what the
 * other side (and the projection) takes.
 * Last, POST /users with EventStoreDB as the store (its gRPC test server in a
 * process of its own; BENCH_ESDB=0 leaves it out): the CPU the command side and
 * the server each spend per registration.
 * Each read DB's report ends with a line per path holding its medians against
 * the targets, met or missed (`bench/hot-path-targets.ts`).
 * BENCH_PROFILE_DIR=<dir> profiles every process of the stack as `--cpu-prof`
 * would (`bench/cpu-profile.mjs`; one .cpuprofile per process, written when it
 * stops; open it in Chrome DevTools' Performance panel or speedscope). Prints figures; asserts nothing.
 */
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const runs = Number(process.env.BENCH_RUNS ?? 3);
const seedUsers = Number(process.env.BENCH_USERS ?? 2000);
/** BENCH_PATHS=get,list,post runs only those paths. */
const only = process.env.BENCH_PATHS?.split(',');
const mariadbUrl = (process.env.MARIADB_URL ?? 'mysql://root@127.0.0.1:3306').replace(/\/$/, '');

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** Requests answered 2xx. */
  ok: number;
  /** CPU per 2xx request of each role process, µs (when the roles were given). */
  cpuPerRequest?: Record<string, number>;
  /** The same for each Node process's main thread alone (its event loop), µs. */
  loopPerRequest?: Record<string, number>;
  /** The share of the machine's cores left idle (or waiting on I/O) over the timed part. */
  idle?: number;
  /**
   * On the embedded store, its writer thread: the share of the time in transactions, appends per transaction, and
   * the transactions' times (`users_event_store_commit_duration_seconds`): the bucket bound under which 99% fell,
   * and the share over `slowCommitSeconds`.
   */
  writer?: { busy: number; appendsPerCommit: number; commitP99?: number; slowCommits?: number };
}

interface WriterCounts {
  commits: number;
  appends: number;
  seconds: number;
  durations: Bucket[];
}

/** A commit this long or longer is one that also checkpointed, or waited for a core or the disk. */
const slowCommitSeconds = 0.005;

/** The embedded store's writer counts (`users_event_store_*`) from the write API's /metrics; undefined without them. */
async function writerCounts(write: string): Promise<WriterCounts | undefined> {
  const text = await fetch(`${write}/metrics`).then((response) => response.text());
  const total = (name: string) => sample(text, `users_event_store_${name}_total`) ?? NaN;
  const counts = { commits: total('commits'), appends: total('commit_appends'), seconds: total('commit_seconds') };
  return Number.isNaN(counts.commits) ? undefined : { ...counts, durations: histogramBuckets(text, 'users_event_store_commit_duration_seconds') };
}

type Request = NonNullable<autocannon.Options['requests']>[number];

async function load(url: string, request: Request, duration: number): Promise<Figures> {
  const result = await autocannon({ url, connections, duration, requests: [request] });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
    ok: result['2xx'],
  };
}

/** The load generator (autocannon, in this process): its CPU counts as a role's, since it shares the cores. */
const loadGenerator = 'load generator';

/** The MariaDB server's process among the roles, when counted: not a Node process, its work is on a thread per connection. */
const mariadbServer = 'mariadb-server';

/**
 * A warm-up, then the timed load; with `roles`, also the CPU each role process (and
 * each Node process's event loop) spent per 2xx request, the load generator's, and
 * the share of the cores left idle.
 */
async function measure(url: string, request: Request, roles?: () => Map<string, number>, writer?: () => Promise<WriterCounts | undefined>): Promise<Figures> {
  await load(url, request, 2);
  const pids = new Map(roles?.() ?? []);
  if (pids.size > 0) pids.set(loadGenerator, process.pid);
  const loops = new Map([...pids].filter(([role]) => role !== mariadbServer));
  const before = new Map([...pids].map(([role, pid]) => [role, cpuMicros(pid)]));
  const loopsBefore = new Map([...loops].map(([role, pid]) => [role, mainThreadCpuMicros(pid)]));
  const writerBefore = await writer?.();
  const [idleBefore, started] = [machineIdleSeconds(), performance.now()];
  const figures = await load(url, request, seconds);
  const elapsed = (performance.now() - started) / 1000;
  const idle = (machineIdleSeconds() - idleBefore) / (cores * elapsed);
  const writerAfter = await writer?.();
  const written =
    writerBefore && writerAfter && writerAfter.commits > writerBefore.commits
      ? {
          writer: {
            busy: (writerAfter.seconds - writerBefore.seconds) / elapsed,
            appendsPerCommit: (writerAfter.appends - writerBefore.appends) / (writerAfter.commits - writerBefore.commits),
            commitP99: quantileBound(writerBefore.durations, writerAfter.durations, 0.99),
            slowCommits: shareAbove(writerBefore.durations, writerAfter.durations, slowCommitSeconds),
          },
        }
      : {};
  if (pids.size === 0 || figures.ok === 0) return figures;
  const perRequest = (used: Map<string, number>, of: (pid: number) => number, pidsOf: Map<string, number>) =>
    Object.fromEntries([...pidsOf].map(([role, pid]) => [role, (of(pid) - used.get(role)!) / figures.ok]));
  return { ...figures, cpuPerRequest: perRequest(before, cpuMicros, pids), loopPerRequest: perRequest(loopsBefore, mainThreadCpuMicros, loops), idle, ...written };
}

/**
 * The command side on EventStoreDB (the gRPC test server, in a process of its
 * own): how much CPU the command side spends per registration, beside the
 * server's own, so that the service's share can be told from the store's.
 */
async function benchCommandSideOnEsdb() {
  const server = await startChild('esdb-server.ts');
  const port = await freePort();
  const command = spawn(process.execPath, await runnable(new URL('../command-side/main.ts', import.meta.url)), {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, EVENTSTORE_URL: server.line, COMMAND_PORT: `${port}`, LOG_LEVEL: 'info', RATE_LIMIT_PER_MINUTE: '0' },
  });
  command.once('exit', onInterrupt(() => stopChild(command)));
  const url = `http://127.0.0.1:${port}`;
  try {
    await untilHealthy(`${url}/health`, command, 'the command side on EventStoreDB');
    const request: Request = { method: 'POST', path: '/users', headers: json, setupRequest: newUser };
    await load(url, request, 2);
    const [service0, store0, loop0] = [cpuMicros(command.pid!), cpuMicros(server.pid), mainThreadCpuMicros(command.pid!)];
    const result = await autocannon({ url, connections, duration: seconds, requests: [request] });
    const registrations = result['2xx'];
    const service = (cpuMicros(command.pid!) - service0) / registrations;
    const store = (cpuMicros(server.pid) - store0) / registrations;
    const loop = (mainThreadCpuMicros(command.pid!) - loop0) / registrations;
    console.log(
      `\nPOST /users on EventStoreDB (test server): ${Math.round(registrations / result.duration)} req/s, p99 ${result.latency.p99} ms; ` +
        `CPU per registration: command side ${Math.round(service)} µs, test server ${Math.round(store)} µs; ` +
        `the command side's event loop ${Math.round(loop)} µs (at most ${Math.round(1e6 / loop)} registrations/s on one core)` +
        (result.non2xx ? ` (non-2xx ${result.non2xx})` : ''),
    );
  } finally {
    await stopChild(command);
    await server.stop();
  }
}

/**
 * A baseline app in a process of its own, which prints its port: the bare Fastify app
 * (`bare-fastify.ts`) or one of POST /users' references.
 */
async function startBaseline(script: string) {
  const child = await startChild(script);
  return { url: `http://127.0.0.1:${child.line}`, pid: child.pid, stop: child.stop };
}

/**
 * POST /users' references, each run after it in every run, each in a process of its
 * own with nothing beside it: the durable echo (`bench/durable-echo.ts`), the least a
 * 2xx that means "on disk" costs on the embedded store, whatever the request path;
 * the write API in memory (`bench/write-api-in-memory.ts`), the least this
 * request path costs, whatever the store; and the write API with no work
 * (`bench/write-api-no-work.ts`), the least any registration costs through this
 * API's HTTP layer. The first is sent the echo's requests and lives through the
 * benchmark, its store growing as the service's does; the second is sent POST
 * /users' and starts afresh for each run, since its in-memory store keeps every
 * event on its heap, a cost no real store puts there; the third is sent POST
 * /users' and keeps nothing.
 */
const references = [
  { name: 'durable echo', script: 'durable-echo.ts', sends: 'echo', freshEachRun: false, what: 'the body appended to the embedded store before the echo is sent' },
  { name: 'write API in memory', script: 'write-api-in-memory.ts', sends: 'users', freshEachRun: true, what: 'the write API over in-memory stores, no projector, started afresh for each run' },
  { name: 'write API, no work', script: 'write-api-no-work.ts', sends: 'users', freshEachRun: false, what: 'the write API whose registration does no work: its HTTP layer alone' },
] as const;
type Reference = (typeof references)[number]['name'];

/** A reference's process, started when first needed (again after `stop()`). */
function referenceProcess(reference: (typeof references)[number]) {
  let started: ReturnType<typeof startBaseline> | undefined;
  return {
    ...reference,
    ready: () => (started ??= startBaseline(reference.script)),
    async stop() {
      const running = started;
      started = undefined;
      await (await running)?.stop();
    },
  };
}
type ReferenceProcess = ReturnType<typeof referenceProcess>;

const json = { 'content-type': 'application/json' };
const newUser = (request: autocannon.Request) => {
  const tag = randomUUID();
  return { ...request, body: JSON.stringify({ name: `Bench ${tag}`, email: `${tag}@bench.example.org` }) };
};
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;

async function seed(write: string, read: string, count: number) {
  const users: { id: string; email: string }[] = [];
  let last = '';
  for (let i = 0; i < count; i += 32) {
    await Promise.all(
      Array.from({ length: Math.min(32, count - i) }, async (_, j) => {
        const email = `seed${i + j}.${randomUUID()}@bench.example.org`;
        const response = await fetch(`${write}/users`, { method: 'POST', headers: json, body: JSON.stringify({ name: `Seed ${i + j}`, email }) });
        const body = (await response.json()) as { id: string; consistencyToken: string };
        users.push({ id: body.id, email });
        last = body.consistencyToken;
      }),
    );
  }
  // Every seeded row readable before the reads are timed.
  for (const user of users) {
    const response = await fetch(`${read}/users/${user.id}`, { headers: { 'consistency-token': last } });
    if (response.status !== 200) throw new Error(`seeded user ${user.id} not readable: ${response.status}`);
  }
  return users;
}

/** The role processes, and the MariaDB server (`mariadb-server`) when it is measured. */
const withServer = (roles: Map<string, number>, server: number | undefined) => (server === undefined ? roles : new Map([...roles, [mariadbServer, server]]));

/** `references`: each reference's runs, beside POST /users' (see `references`). */
type Row = { path: Path; bare: Figures[]; service: Figures[]; references?: Partial<Record<Reference, Figures[]>> };
type Baseline = { url: string; pid: number };

async function benchStack(label: string, env: Record<string, string>, bare: Baseline, rows: Row[], withReferences: readonly ReferenceProcess[] = []) {
  const profile = process.env.BENCH_PROFILE_DIR;
  const preload = fileURLToPath(new URL('bench/cpu-profile.mjs', import.meta.url));
  const profiling: Record<string, string> = profile ? { NODE_OPTIONS: `--import=${preload}`, CPU_PROFILE_DIR: `${profile}/${label}` } : {};
  const stack = await startStack({ LOG_LEVEL: 'info', ...profiling, ...env }, { logFile: 'service.log' });
  // On the MariaDB read DB, the server's own CPU per request too, when it runs on this machine.
  const server = env.READ_DB_URL === undefined ? undefined : localMariaDbServer(env.READ_DB_URL);
  try {
    const users = await seed(stack.write, stack.read, seedUsers);
    const paths: { path: Path; bare: Request; service: Request; url: string }[] = [
      {
        path: 'GET /users/:id',
        bare: { method: 'GET', path: '/hello' },
        service: { method: 'GET', setupRequest: (r) => ({ ...r, path: `/users/${pick(users).id}` }) },
        url: stack.read,
      },
      {
        path: 'GET /users?email=',
        bare: { method: 'GET', path: '/hello' },
        service: { method: 'GET', setupRequest: (r) => ({ ...r, path: `/users?email=${encodeURIComponent(pick(users).email)}` }) },
        url: stack.read,
      },
      {
        path: 'POST /users',
        bare: { method: 'POST', path: '/echo', headers: json, setupRequest: newUser },
        service: { method: 'POST', path: '/users', headers: json, setupRequest: newUser },
        url: stack.write,
      },
    ];
    const keys: Record<Path, string> = { 'GET /users/:id': 'get', 'GET /users?email=': 'list', 'POST /users': 'post' };
    const chosen = paths.filter((p) => !only || only.includes(keys[p.path]));
    /** One run of a path: bare's counterpart, then the service, then (POST) the references, each printed. */
    const runOnce = async ({ path, bare: bareRequest, service, url }: (typeof paths)[number], row: Row, run: number) => {
      const b = await measure(bare.url, bareRequest, () => new Map([['bare', bare.pid]]));
      const writer = path === 'POST /users' ? () => writerCounts(stack.write) : undefined;
      const s = await measure(url, service, () => withServer(stack.roles(), server), writer);
      row.bare.push(b);
      row.service.push(s);
      const cpu = Object.entries(s.cpuPerRequest ?? {}).map(([role, us]) => `${role} ${Math.round(us)}`);
      const loops = Object.entries(s.loopPerRequest ?? {}).map(([role, us]) => `${role} ${Math.round(us)}`);
      console.log(
        `  [${label}] ${path} run ${run + 1}: ${Math.round(s.rps)} req/s p99 ${s.p99} ms` +
          ` (bare ${Math.round(b.rps)} req/s p99 ${b.p99} ms, ${Math.round(b.cpuPerRequest?.bare ?? 0)} µs of CPU per request; ratio ${(s.rps / b.rps).toFixed(2)})` +
          (cpu.length > 0 ? `; CPU µs per request: ${cpu.join(', ')}` : '') +
          (loops.length > 0 ? `; event loops: ${loops.join(', ')}; cores idle ${percent(s.idle)} (bare's run ${percent(b.idle)})` : '') +
          (s.writer ? `; the store's writer busy ${percent(s.writer.busy)}, ${s.writer.appendsPerCommit.toFixed(1)} appends per commit${commitTimes(s.writer.commitP99, s.writer.slowCommits)}` : '') +
          (s.non2xx || s.errors ? ` non-2xx ${s.non2xx}, errors ${s.errors}` : ''),
      );
      if (path !== 'POST /users') return;
      for (const reference of withReferences) {
        const { url: at, pid } = await reference.ready();
        const f = await measure(at, reference.sends === 'echo' ? bareRequest : service, () => new Map([[reference.name, pid]]));
        if (reference.freshEachRun) await reference.stop();
        ((row.references ??= {})[reference.name] ??= []).push(f);
        console.log(
          `  [${label}] ${reference.name} run ${run + 1}: ${Math.round(f.rps)} req/s p99 ${f.p99} ms (ratio ${(f.rps / b.rps).toFixed(2)} of the echo; ` +
            `POST /users ${(s.rps / f.rps).toFixed(2)} of it); CPU µs per request: ${reference.name} ${Math.round(f.cpuPerRequest?.[reference.name] ?? 0)}, ` +
            `load generator ${Math.round(f.cpuPerRequest?.[loadGenerator] ?? 0)}; its event loop ${Math.round(f.loopPerRequest?.[reference.name] ?? 0)}, ` +
            `cores idle ${percent(f.idle)}` +
            (f.non2xx || f.errors ? ` non-2xx ${f.non2xx}, errors ${f.errors}` : ''),
        );
      }
    };
    // The reads' runs in turn (lookup, list, lookup, list...): the list's target is relative to the lookup's
    // ratio, and bare's pace can double within minutes, so their runs are taken side by side rather than one
    // path's after the other's. Registrations last: their load (and the rows they add) must not reach a read's run.
    const newRow = (path: Path): Row => ({ path, bare: [], service: [] });
    const reads = chosen.filter((p) => p.path !== 'POST /users').map((p) => ({ p, row: newRow(p.path) }));
    for (let run = 0; run < runs; run++) for (const { p, row } of reads) await runOnce(p, row, run);
    rows.push(...reads.map(({ row }) => row));
    for (const p of chosen.filter((c) => c.path === 'POST /users')) {
      const row = newRow(p.path);
      for (let run = 0; run < runs; run++) await runOnce(p, row, run);
      rows.push(row);
    }
  } finally {
    await stack.stop();
  }
}

const percent = (share: number | undefined) => (share === undefined ? '?' : `${Math.round(share * 100)}%`);

/** The median of figures every run gave; undefined when one did not. */
const medianOf = (figures: (number | undefined)[]) => (figures.every((f): f is number => f !== undefined) ? median(figures) : undefined);

/** `, commits p99 <= 10 ms, 12% over 5 ms`: the writer's transactions (in a run, or the runs' medians), when the store timed them. */
function commitTimes(commitP99: number | undefined, slowCommits: number | undefined): string {
  if (commitP99 === undefined || slowCommits === undefined) return '';
  const p99 = Number.isFinite(commitP99) ? `<= ${commitP99 * 1000} ms` : `> ${commitDurationBuckets.at(-1)! * 1000} ms`;
  return `, commits p99 ${p99}, ${percent(slowCommits)} over ${slowCommitSeconds * 1000} ms`;
}

/** Each role's median CPU per request over the runs, e.g. `command-side 210, projector 95, query-side 3`. */
function cpuMedians(runs: Figures[]): string {
  return medianByRole(runs, (f) => f.cpuPerRequest)
    .map(([role, us]) => `${role} ${Math.round(us)}`)
    .join(', ');
}

/** Each role's median over the runs of a per-role figure (CPU or event loop per request), in order of role. */
function medianByRole(runs: Figures[], figure: (f: Figures) => Record<string, number> | undefined): [role: string, median: number][] {
  const roles = [...new Set(runs.flatMap((f) => Object.keys(figure(f) ?? {})))].sort();
  return roles.map((role) => [role, median(runs.flatMap((f) => figure(f)?.[role] ?? []))]);
}

/** The median over the runs of each run's req/s against its counterpart's in the same run (bare's, or a reference's). */
const pairedRatio = (runs: readonly Figures[], against: readonly Figures[]) => median(runs.map((f, i) => f.rps / against[i]!.rps));

/** The whole machine's CPU per request in a run: every role, the MariaDB server when counted, the load generator. */
const machineCpu = (f: Figures) => Object.values(f.cpuPerRequest ?? {}).reduce((sum, us) => sum + us, 0);

/**
 * What a path's target allows: the bare app's pace in these runs times the target is a pace that, on this
 * machine's cores, leaves so many µs of CPU per request for everything (load generator included). Printed
 * beside what the service's requests cost, so that a missed target shows whether shaving could reach it.
 */
function cpuBudget(row: Row, target: number): string {
  const bareRps = median(row.bare.map((b) => b.rps));
  const budget = (cores * 1e6) / (target * bareRps);
  const spent = median(row.service.map(machineCpu));
  const bare = median(row.bare.map(machineCpu));
  return (
    `${row.path}: ${target.toFixed(2)} of bare (${Math.round(target * bareRps)} req/s) leaves ${Math.round(budget)} µs of CPU per request ` +
    `on ${cores} cores, load generator included; the service's requests cost ${Math.round(spent)} µs ` +
    `(${(spent / budget).toFixed(1)}x that), bare's ${Math.round(bare)} µs`
  );
}

/**
 * What a path's busiest event loop allows: a thread uses at most one core, so a loop
 * that spends N µs per request caps the path at 1,000,000 / N req/s however many cores
 * are free. Printed with bare's, and with the share of the cores each path's runs left
 * idle: a path below its cap with idle cores is waiting (on the disk, on hops between
 * threads and processes), not computing.
 */
function eventLoopCap(row: Row): string {
  const loops = (runs: Figures[]) => medianByRole(runs, (f) => f.loopPerRequest).sort((a, b) => b[1] - a[1]);
  const [busiest] = loops(row.service);
  const writers = row.service.flatMap((s) => s.writer ?? []);
  const bare = loops(row.bare).find(([role]) => role === 'bare');
  if (!busiest || !bare) return `${row.path}: no event-loop figures`;
  const bareRps = median(row.bare.map((b) => b.rps));
  const cap = 1e6 / busiest[1];
  return (
    `${row.path}: busiest event loop the ${busiest[0]}'s, ${Math.round(busiest[1])} µs per request: at most ${Math.round(cap)} req/s ` +
    `(${(cap / bareRps).toFixed(2)} of bare) whatever the cores; bare's ${Math.round(bare[1])} µs; ` +
    `cores idle ${percent(median(row.service.map((s) => s.idle ?? 0)))} (bare's runs ${percent(median(row.bare.map((b) => b.idle ?? 0)))})` +
    (writers.length > 0
      ? `; the event store's writer (one thread) busy ${percent(median(writers.map((w) => w.busy)))} of the time, ` +
        `${median(writers.map((w) => w.appendsPerCommit)).toFixed(1)} appends per commit` +
        commitTimes(medianOf(writers.map((w) => w.commitP99)), medianOf(writers.map((w) => w.slowCommits)))
      : '')
  );
}

function report(label: string, rows: Row[], readDb: ReadDb) {
  // Each path's figures against its target, worked out once: the table and the verdicts print them.
  const measured = rows.map(({ path, bare, service }) => ({
    path,
    ratio: pairedRatio(service, bare),
    p99Ms: median(service.map((s) => s.p99)),
  }));
  console.log(`\n${label}: medians over ${runs} runs of ${seconds} s at ${connections} connections`);
  console.log('| path | req/s | p50 ms | p99 ms | bare req/s | bare p99 ms | ratio (median of per-run ratios) | CPU µs per request, by role | bare app\'s CPU µs per request |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  rows.forEach(({ path, bare, service }, i) => {
    const { ratio, p99Ms } = measured[i]!;
    console.log(
      `| ${path} | ${Math.round(median(service.map((s) => s.rps)))} | ${median(service.map((s) => s.p50))} | ` +
        `${p99Ms} | ${Math.round(median(bare.map((b) => b.rps)))} | ${median(bare.map((b) => b.p99))} | ` +
        `${ratio.toFixed(2)} | ${cpuMedians(service)} | ${Math.round(median(bare.map((b) => b.cpuPerRequest?.bare ?? 0)))} |`,
    );
  });
  for (const row of rows) console.log(cpuBudget(row, targets[readDb][row.path].ratio));
  for (const row of rows) console.log(eventLoopCap(row));
  for (const { path, bare, service, references: byName } of rows) {
    for (const { name, what } of references) {
      const its = byName?.[name];
      if (!its) continue;
      const toEcho = pairedRatio(its, bare);
      const serviceToIt = pairedRatio(service, its);
      console.log(
        `${path}'s reference, the ${name} (${what}): ` +
          `${Math.round(median(its.map((f) => f.rps)))} req/s, p99 ${median(its.map((f) => f.p99))} ms, ${toEcho.toFixed(2)} of the echo; ` +
          `CPU µs per request ${Math.round(median(its.map((f) => f.cpuPerRequest?.[name] ?? 0)))} (load generator ` +
          `${Math.round(median(its.map((f) => f.cpuPerRequest?.[loadGenerator] ?? 0)))}; its event loop ` +
          `${Math.round(median(its.map((f) => f.loopPerRequest?.[name] ?? 0)))}, cores idle ${percent(median(its.map((f) => f.idle ?? 0)))}); ` +
          `${path} at ${serviceToIt.toFixed(2)} of it`,
      );
    }
  }
  // The list's verdict compares ratios to bare, whose pace moves even between adjacent runs: the paths compared directly too.
  const get = rows.find((r) => r.path === 'GET /users/:id');
  const list = rows.find((r) => r.path === 'GET /users?email=');
  if (get && list) {
    const rps = (r: Row) => median(r.service.map((s) => s.rps));
    // Every role's CPU per request, the MariaDB server's when counted, the load generator's: what a request costs the machine.
    const cpu = (r: Row) => median(r.service.map(machineCpu));
    console.log(
      `list against GET, directly: req/s ${(rps(list) / rps(get)).toFixed(2)}, ` +
        `CPU per request ${(cpu(get) / cpu(list)).toFixed(2)} (the GET's over the list's)`,
    );
  }
  console.log(`targets (issue 10), ${label}, medians of the runs above:`);
  for (const line of targetVerdicts(readDb, measured)) console.log(`  ${line}`);
}

async function main() {
  const bare = await startBaseline('bare-fastify.ts');
  const running = !only || only.includes('post') ? references.map(referenceProcess) : [];
  try {
    const embedded: Row[] = [];
    await benchStack('embedded', {}, bare, embedded, running);
    report('embedded read DB', embedded, 'embedded');
    if (process.env.BENCH_MARIADB !== '0') {
      const database = `queries_bench_http_${randomBytes(4).toString('hex')}`;
      const mariadb: Row[] = [];
      const drop = () => dropDatabases(mariadbUrl, [database]);
      onInterrupt(drop);
      try {
        await benchStack('mariadb', { READ_DB_URL: `${mariadbUrl}/${database}` }, bare, mariadb);
      } finally {
        await drop();
      }
      report('MariaDB read DB', mariadb, 'mariadb');
    }
    if (process.env.BENCH_ESDB !== '0') await benchCommandSideOnEsdb();
  } finally {
    for (const reference of running) await reference.stop();
    await bare.stop();
  }
}

main().catch((error: unknown) => benchExit(1, error));
