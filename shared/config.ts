import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { FromSchema } from 'json-schema-to-ts';
import { ConfigError } from './errors.js';
import { ajv, fieldProblems } from './schema-validation.js';

/**
 * All configuration comes from environment variables, checked once at start
 * against this schema; an error lists every bad key. Defaults run the whole
 * service on embedded stores under ./data.
 */
/** Three times EventStoreDB's operation timeout (`esdb-event-store.ts`). */
const minGraceOnEventStoreDb = 30_000;
const port = { type: 'integer', minimum: 0, maximum: 65535 } as const;
const positiveMs = { type: 'integer', minimum: 1, maximum: 600_000 } as const;

/** proxy-addr's names for address ranges, accepted in TRUST_PROXY's list. */
const namedRanges = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** An address, an address/prefix (CIDR) or a named range. */
function isProxyAddress(entry: string): boolean {
  if (namedRanges.has(entry)) return true;
  const [address = '', prefix, ...rest] = entry.split('/');
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return false;
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128));
}

const trustProxyShape = /^(true|false|\d{1,2})$/;
const proxyList = (value: string): string[] => value.split(',').map((entry) => entry.trim());

/** TRUST_PROXY: `true`, `false`, a hop count, or a comma-separated list of addresses, CIDRs and named ranges. */
ajv.addKeyword({
  keyword: 'trustProxy',
  type: 'string',
  schemaType: 'boolean',
  errors: true,
  validate: function validTrustProxy(this: unknown, _schema: boolean, value: string): boolean {
    if (trustProxyShape.test(value) || proxyList(value).every(isProxyAddress)) return true;
    (validTrustProxy as { errors?: object[] }).errors = [
      { keyword: 'trustProxy', params: {}, message: 'must be true, false, a hop count or a comma-separated list of addresses and CIDR ranges' },
    ];
    return false;
  },
});

export const configSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    NODE_ENV: { type: 'string', default: 'development' },
    LOG_LEVEL: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    LOG_FORMAT: { enum: ['auto', 'json', 'pretty'], default: 'auto' },
    HOST: { type: 'string', minLength: 1, default: '127.0.0.1' },
    COMMAND_PORT: { ...port, default: 3000 },
    QUERY_PORT: { ...port, default: 3001 },
    PROJECTOR_METRICS_PORT: { ...port, default: 3002 },
    RELAY_METRICS_PORT: { ...port, default: 3003 },
    REBUILD_METRICS_PORT: port,
    // At most 20 s: `dead-letters` takes a rebuild lock whose heartbeat is a minute old for an abandoned run.
    REBUILD_HEARTBEAT_MS: { type: 'integer', minimum: 10, maximum: 20_000, default: 5000 },
    REBUILD_PAUSE_MS: { type: 'integer', minimum: 100, maximum: 600_000, default: 30_000 },
    REBUILD_PAGE_DELAY_MS: { type: 'integer', minimum: 0, maximum: 60_000, default: 0 },
    PROJECTOR_READY_MAX_LAG_MS: { type: 'integer', minimum: 1000, maximum: 86_400_000, default: 60_000 },
    DATA_DIR: { type: 'string', minLength: 1, default: './data' },
    EVENT_STORE_FILE: { type: 'string', minLength: 1 },
    EVENTSTORE_URL: { type: 'string', pattern: '^(esdb|esdb\\+discover)://' },
    // host:port, comma-separated (kafkajs takes a broker without a port as port NaN and retries it for ever).
    KAFKA_BROKERS: { type: 'string', pattern: '^[^,\\s]+:[0-9]{1,5}(,[^,\\s]+:[0-9]{1,5})*$' },
    // Kafka allows 249 characters; `<topic>:<partition>` names a checkpoint and a parked event's source, in 191.
    KAFKA_TOPIC: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,180}$', default: 'users.events.v1' },
    KAFKA_CLIENT_ID: { type: 'string', minLength: 1, default: 'users-service' },
    KAFKA_GROUP_ID: { type: 'string', minLength: 1, default: 'users-projector' },
    KAFKA_SESSION_TIMEOUT_MS: { type: 'integer', minimum: 1000, maximum: 300_000, default: 6000 },
    RELAY_ID: { type: 'string', pattern: '^[A-Za-z0-9._:@-]{1,200}$' },
    RELAY_LEASE_MS: { type: 'integer', minimum: 1000, maximum: 600_000, default: 15_000 },
    RELAY_BATCH_SIZE: { type: 'integer', minimum: 1, maximum: 10_000, default: 500 },
    READ_DB_URL: { type: 'string', pattern: '^(mysql|mariadb|sqlite)://' },
    KEY_STORE_URL: { type: 'string', pattern: '^(mysql|mariadb|sqlite)://' },
    EMAIL_HASH_SECRET: { type: 'string', minLength: 32, maxLength: 1024 },
    // `replace`: after a key store was lost, record this command side's secret in place of the one before.
    EMAIL_HASH_SECRET_RECORD: { type: 'string', enum: ['keep', 'replace'], default: 'keep' },
    KEY_CACHE_MS: { type: 'integer', minimum: 0, maximum: 3_600_000, default: 60_000 },
    WRITE_API_TOKENS: { type: 'string' },
    CONSISTENCY_WAIT_MS: { ...positiveMs, default: 5000 },
    PROJECTOR_BATCH_SIZE: { type: 'integer', minimum: 1, maximum: 10_000, default: 500 },
    PROJECTOR_MAX_ATTEMPTS: { type: 'integer', minimum: 1, maximum: 100, default: 3 },
    POLL_MS: { type: 'integer', minimum: 1, maximum: 10_000, default: 20 },
    EMAIL_RESERVATION_GRACE_MS: { ...positiveMs, default: 60_000 },
    BODY_LIMIT_BYTES: { type: 'integer', minimum: 256, maximum: 10_485_760, default: 16_384 },
    READ_API_TOKENS: { type: 'string' },
    RATE_LIMIT_PER_MINUTE: { type: 'integer', minimum: 0, maximum: 10_000_000, default: 0 },
    TRUST_PROXY: { type: 'string', trustProxy: true },
    QUERY_TIMEOUT_MS: { ...positiveMs, default: 5000 },
  },
  required: [
    'NODE_ENV',
    'LOG_LEVEL',
    'LOG_FORMAT',
    'HOST',
    'COMMAND_PORT',
    'QUERY_PORT',
    'PROJECTOR_METRICS_PORT',
    'RELAY_METRICS_PORT',
    'PROJECTOR_READY_MAX_LAG_MS',
    'REBUILD_HEARTBEAT_MS',
    'REBUILD_PAUSE_MS',
    'REBUILD_PAGE_DELAY_MS',
    'DATA_DIR',
    'CONSISTENCY_WAIT_MS',
    'PROJECTOR_BATCH_SIZE',
    'PROJECTOR_MAX_ATTEMPTS',
    'POLL_MS',
    'EMAIL_RESERVATION_GRACE_MS',
    'BODY_LIMIT_BYTES',
    'RATE_LIMIT_PER_MINUTE',
    'QUERY_TIMEOUT_MS',
    'KAFKA_TOPIC',
    'KAFKA_CLIENT_ID',
    'KAFKA_GROUP_ID',
    'KAFKA_SESSION_TIMEOUT_MS',
    'RELAY_LEASE_MS',
    'RELAY_BATCH_SIZE',
    'KEY_CACHE_MS',
    'EMAIL_HASH_SECRET_RECORD',
  ],
} as const;

type Env = FromSchema<typeof configSchema>;

export type ReadDbConfig = { client: 'sqlite'; file: string } | { client: 'mysql'; url: string };

export interface Config {
  readonly env: string;
  readonly logLevel: Env['LOG_LEVEL'];
  /** `auto`: readable lines on a terminal unless NODE_ENV=production, else JSON (see logger.ts). */
  readonly logFormat: Env['LOG_FORMAT'];
  readonly host: string;
  readonly commandPort: number;
  readonly queryPort: number;
  /** The projector's and the relay's small HTTP port: /metrics, /health/live, /health/ready. */
  readonly projectorMetricsPort: number;
  readonly relayMetricsPort: number;
  /** Where a running rebuild serves its progress as metrics; none when unset. */
  readonly rebuildMetricsPort?: number;
  /** The rebuild's tuning: how often it renews its lock, how long a pause of the live projector lasts, the wait between reads of the log. */
  readonly rebuild: { readonly heartbeatMs: number; readonly pauseMs: number; readonly pageDelayMs: number };
  /** The projector reports not ready while it is further behind than this. */
  readonly projectorReadyMaxLagMs: number;
  /** EventStoreDB when `url` is set (EVENTSTORE_URL), else the embedded file. */
  readonly eventStore: { readonly file: string; readonly url?: string };
  /** Kafka when KAFKA_BROKERS is set: the relay publishes, the projector consumes. */
  readonly kafka?: {
    readonly brokers: readonly string[];
    readonly topic: string;
    readonly clientId: string;
    readonly groupId: string;
    /** How long a projector that died silently keeps its partitions from the group (KAFKA_SESSION_TIMEOUT_MS). */
    readonly sessionTimeoutMs: number;
  };
  /**
   * This relay's identity in the lease (RELAY_ID, default the host name): a relay
   * restarted with the same identity takes its lease back at once, another waits
   * for it to expire. Two relays running at once must not share one.
   */
  readonly relayId: string;
  readonly relayLeaseMs: number;
  readonly relayBatchSize: number;
  readonly readDb: ReadDbConfig;
  /**
   * Where the per-user data keys live (KEY_STORE_URL): a store that really
   * deletes, apart from the append-only log. Default: `keys.sqlite` under
   * DATA_DIR; with a MariaDB read DB, the database `user_keys` on the same server.
   */
  readonly keyStore: ReadDbConfig;
  /** The secret of the keyed hash that names email reservations (EMAIL_HASH_SECRET); the key store keeps one of its own when unset. */
  readonly emailHashSecret?: string;
  /**
   * EMAIL_HASH_SECRET_RECORD: `keep` (a write API whose secret differs from the one the
   * event store recorded refuses to start) or `replace` (it records its own instead: for
   * a key store lost with the secret it kept).
   */
  readonly emailHashSecretRecord: 'keep' | 'replace';
  /** How long a process keeps a data key it read (KEY_CACHE_MS): the longest a destroyed key lives on in another process's memory. */
  readonly keyCacheMs: number;
  readonly writeApiTokens: readonly string[];
  readonly readApiTokens: readonly string[];
  readonly rateLimitPerMinute: number;
  /**
   * Which proxies in front of the APIs are trusted to report the client's address
   * (X-Forwarded-For), as Fastify's `trustProxy`: off, every hop, a hop count, or
   * their addresses. The rate limit counts clients by that address.
   */
  readonly trustProxy: boolean | number | readonly string[];
  readonly queryTimeoutMs: number;
  readonly consistencyWaitMs: number;
  readonly projectorBatchSize: number;
  /** Tries of a failing batch, then of each of its events alone, before an event is parked. */
  readonly projectorMaxAttempts: number;
  readonly pollMs: number;
  readonly emailReservationGraceMs: number;
  readonly bodyLimitBytes: number;
}

const check = ajv.compile<Env>({ ...configSchema, $id: 'config' });

function readDbFrom(url: string | undefined, dataDir: string): ReadDbConfig {
  if (!url) return { client: 'sqlite', file: resolve(dataDir, 'queries.sqlite') };
  if (url.startsWith('sqlite://')) return { client: 'sqlite', file: resolve(url.slice('sqlite://'.length)) };
  return { client: 'mysql', url };
}

/** KEY_STORE_URL, or beside the read DB: `keys.sqlite` under DATA_DIR, or `user_keys` on the read DB's MariaDB server. */
function keyStoreFrom(url: string | undefined, readDb: ReadDbConfig, dataDir: string): ReadDbConfig {
  if (url) return readDbFrom(url, dataDir);
  if (readDb.client === 'sqlite') return { client: 'sqlite', file: resolve(dataDir, 'keys.sqlite') };
  const server = new URL(readDb.url);
  server.pathname = '/user_keys';
  return { client: 'mysql', url: server.toString() };
}

function trustProxyFrom(value: string | undefined): Config['trustProxy'] {
  if (value === undefined || value === 'false') return false;
  if (value === 'true') return true;
  if (/^\d+$/.test(value)) return Number(value) > 0 && Number(value);
  return Object.freeze(proxyList(value));
}

const tokenList = (value: string | undefined): readonly string[] =>
  Object.freeze(
    (value ?? '')
      .split(',')
      .map((token) => token.trim())
      .filter(Boolean),
  );

/**
 * The configuration of one process. `servesWriteApi`: this process runs the write
 * API, which requires WRITE_API_TOKENS when NODE_ENV=production.
 */
export function loadConfig(source: NodeJS.ProcessEnv = process.env, { servesWriteApi = false }: { servesWriteApi?: boolean } = {}): Config {
  // Empty variables count as unset, and numbers arrive as strings.
  const env: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(source)) {
    if (value === undefined || value === '' || !(key in configSchema.properties)) continue;
    const schema = configSchema.properties[key as keyof typeof configSchema.properties];
    env[key] = 'type' in schema && schema.type === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
  }
  const withDefaults = structuredClone(env);
  for (const [key, schema] of Object.entries(configSchema.properties)) {
    if (withDefaults[key] === undefined && 'default' in schema) withDefaults[key] = schema.default;
  }
  const valid = check(withDefaults);
  const problems = valid ? [] : fieldProblems(check.errors);
  // The write API takes no anonymous writes in production; the other roles need no write token.
  if (servesWriteApi && withDefaults.NODE_ENV === 'production' && tokenList(env.WRITE_API_TOKENS as string | undefined).length === 0) {
    problems.push({ field: 'WRITE_API_TOKENS', message: 'must be set when NODE_ENV=production' });
  }
  for (const key of ['READ_DB_URL', 'KEY_STORE_URL'] as const) {
    const url = env[key];
    // A sqlite:// one is a path (spaces and all); a server's must parse, or it fails later as a bare "Invalid URL".
    if (typeof url === 'string' && !url.startsWith('sqlite://') && !problems.some((p) => p.field === key) && !URL.canParse(url)) {
      problems.push({ field: key, message: 'is not a URL (mysql://user:password@host:port/database; percent-encode special characters)' });
    }
  }
  // A key store in a file is one host's: with a shared event store, every other host's processes would find
  // none of the keys, read every person as forgotten, and the relay would publish them so.
  const fileKeyStoreByDefault = env.KEY_STORE_URL === undefined && readDbFrom(env.READ_DB_URL as string | undefined, '.').client === 'sqlite';
  if (withDefaults.NODE_ENV === 'production' && env.EVENTSTORE_URL !== undefined && fileKeyStoreByDefault) {
    problems.push({
      field: 'KEY_STORE_URL',
      message: 'must be set when NODE_ENV=production and EVENTSTORE_URL is set (or READ_DB_URL on MariaDB, whose server then keeps the keys): a key store in a local file is not shared between hosts',
    });
  }
  // On EventStoreDB an append that timed out (after 10 s) may still commit: a claim must outlive that, or a
  // second registration could take the address over from a user whose append is landing. The grace period
  // is also compared across two clocks (the command side's, the server's recording time).
  if (env.EVENTSTORE_URL !== undefined && typeof withDefaults.EMAIL_RESERVATION_GRACE_MS === 'number' && withDefaults.EMAIL_RESERVATION_GRACE_MS < minGraceOnEventStoreDb) {
    problems.push({
      field: 'EMAIL_RESERVATION_GRACE_MS',
      message: `must be at least ${minGraceOnEventStoreDb} when EVENTSTORE_URL is set: an append that timed out (10 s) may still commit, and a claim taken over before it lands lets two users hold one address`,
    });
  }
  if (!valid || problems.length > 0) throw new ConfigError(problems);
  const e = withDefaults;
  const dataDir = resolve(e.DATA_DIR);
  return Object.freeze({
    env: e.NODE_ENV,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    host: e.HOST,
    commandPort: e.COMMAND_PORT,
    queryPort: e.QUERY_PORT,
    projectorMetricsPort: e.PROJECTOR_METRICS_PORT,
    relayMetricsPort: e.RELAY_METRICS_PORT,
    projectorReadyMaxLagMs: e.PROJECTOR_READY_MAX_LAG_MS,
    ...(e.REBUILD_METRICS_PORT === undefined ? {} : { rebuildMetricsPort: e.REBUILD_METRICS_PORT }),
    rebuild: Object.freeze({ heartbeatMs: e.REBUILD_HEARTBEAT_MS, pauseMs: e.REBUILD_PAUSE_MS, pageDelayMs: e.REBUILD_PAGE_DELAY_MS }),
    eventStore: Object.freeze({
      file: resolve(e.EVENT_STORE_FILE ?? resolve(dataDir, 'events.sqlite')),
      ...(e.EVENTSTORE_URL ? { url: e.EVENTSTORE_URL } : {}),
    }),
    ...(e.KAFKA_BROKERS
      ? {
          kafka: Object.freeze({
            brokers: Object.freeze(e.KAFKA_BROKERS.split(',')),
            topic: e.KAFKA_TOPIC,
            clientId: e.KAFKA_CLIENT_ID,
            groupId: e.KAFKA_GROUP_ID,
            sessionTimeoutMs: e.KAFKA_SESSION_TIMEOUT_MS,
          }),
        }
      : {}),
    relayId: e.RELAY_ID ?? `relay@${hostname()}`,
    relayLeaseMs: e.RELAY_LEASE_MS,
    relayBatchSize: e.RELAY_BATCH_SIZE,
    readDb: Object.freeze(readDbFrom(e.READ_DB_URL, dataDir)),
    keyStore: Object.freeze(keyStoreFrom(e.KEY_STORE_URL, readDbFrom(e.READ_DB_URL, dataDir), dataDir)),
    ...(e.EMAIL_HASH_SECRET ? { emailHashSecret: e.EMAIL_HASH_SECRET } : {}),
    emailHashSecretRecord: e.EMAIL_HASH_SECRET_RECORD,
    keyCacheMs: e.KEY_CACHE_MS,
    writeApiTokens: tokenList(e.WRITE_API_TOKENS),
    readApiTokens: tokenList(e.READ_API_TOKENS),
    rateLimitPerMinute: e.RATE_LIMIT_PER_MINUTE,
    trustProxy: trustProxyFrom(e.TRUST_PROXY),
    queryTimeoutMs: e.QUERY_TIMEOUT_MS,
    consistencyWaitMs: e.CONSISTENCY_WAIT_MS,
    projectorBatchSize: e.PROJECTOR_BATCH_SIZE,
    projectorMaxAttempts: e.PROJECTOR_MAX_ATTEMPTS,
    pollMs: e.POLL_MS,
    emailReservationGraceMs: e.EMAIL_RESERVATION_GRACE_MS,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
  });
}
