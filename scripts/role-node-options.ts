/**
 * Node options each role's process starts with: `npm start`, and the projector's
 * runs in `npm run bench:kafka`, so that the benchmark measures the role as it runs.
 * The roles that stream events allocate many short-lived objects per event and keep
 * a batch or two of them alive across awaits, so their young generation is larger
 * than the default: 32 MiB per semi-space halved their garbage collection. For the
 * relay larger did not pay (64 and 128 were slower). The projector runs at 64: once
 * kafkajs stopped making headers it never reads, 64 gave it about a tenth more
 * events per second than 32 in each of six runs in turn, and 128 less (see
 * docs/design-decisions.md). package.json's `start:*` scripts and docker-compose.yml
 * give the same options.
 */
export const roleNodeOptions: Readonly<Record<string, readonly string[]>> = {
  projector: ['--max-semi-space-size=64'],
  relay: ['--max-semi-space-size=32'],
};

/**
 * Node options of the rebuild (`npm run rebuild`, an operator's process rather than
 * a role; `npm run bench:rebuild` starts its runs with them too). 32 MiB per
 * semi-space: once the rebuild stopped keeping each user's key, 32 was faster than
 * 64 at 200,000 and at 1,000,000 events, in turn (docs/design-decisions.md, "Where
 * the rebuild's time went as the log grew"). package.json's `rebuild` script and the
 * README's production line give the same options.
 */
export const rebuildNodeOptions: readonly string[] = ['--max-semi-space-size=32'];

/**
 * glibc's allocator settings for the projector (`GLIBC_TUNABLES`, read when the
 * process starts). kafkajs gathers each fetch response (hundreds of KiB) into one
 * new buffer; above glibc's default threshold (128 KiB) every such buffer is a
 * fresh `mmap`, its pages faulted in one by one as the response is copied and
 * handed back by `munmap` when the buffer dies: 8 to 10% of the projector's CPU.
 * Served from the heap instead (up to 16 MiB), and with up to 64 MiB of freed heap
 * kept for the next ones, the same copies cost a tenth as much, and the projector
 * ran 5 to 28% faster in `npm run bench:kafka` (docs/design-decisions.md, "The
 * projector's fetch buffers"). Other roles showed no gain. Set where the role
 * starts: `npm start` (`scripts/start.ts`), package.json's `start:*projector`
 * scripts, docker-compose.yml and the benchmark; a tunable the environment
 * already sets wins over these.
 */
export const projectorAllocator = 'glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864';

const roleTunables: Readonly<Record<string, string>> = { projector: projectorAllocator };

/** The environment a role's process starts with: `env` with the role's allocator settings before its own tunables. */
export function roleEnvironment(role: string, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const tunables = roleTunables[role];
  if (tunables === undefined) return env;
  // glibc reads the list left to right, a later setting of the same tunable winning.
  return { ...env, GLIBC_TUNABLES: env.GLIBC_TUNABLES ? `${tunables}:${env.GLIBC_TUNABLES}` : tunables };
}
