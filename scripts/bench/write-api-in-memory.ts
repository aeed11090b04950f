import { loadConfig } from '../../shared/config.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { loggerOptions } from '../../shared/logger.js';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import { openVault } from '../../shared/personal-data/vault.js';
import { buildCommandApp } from '../../command-side/app.js';
import { userCommands } from '../../command-side/user-commands.js';

/**
 * POST /users' request path with nothing stored, for `npm run bench:http`: the
 * write API exactly as `command-side/main.ts` builds it (hooks, validation, the
 * decider, the email claim, sealing, metrics), over the in-memory event store and
 * key store instead of the embedded ones. No disk, no writer thread, no projector
 * beside it: its pace is the most any store could give this request path on this
 * machine, as the durable echo's is the most this store could give any request
 * path. Logs at warn (at the bench's info a request logs nothing either; this
 * keeps stdout for the port). Prints its port on stdout once listening.
 */
const config = loadConfig({ ...process.env, COMMAND_PORT: '0', RATE_LIMIT_PER_MINUTE: '0', LOG_LEVEL: 'warn' }, { servesWriteApi: true });
const store = inMemoryEventStore();
const keyStore = inMemoryKeyStore();
const vault = await openVault({ keyStore, cacheMs: config.keyCacheMs });
const app = buildCommandApp({
  commands: userCommands({ store, vault, emailGraceMs: config.emailReservationGraceMs }),
  store,
  writeApiTokens: config.writeApiTokens,
  bodyLimitBytes: config.bodyLimitBytes,
  rateLimitPerMinute: 0,
  trustProxy: config.trustProxy,
  logger: loggerOptions('command-side', { ...config, logFormat: 'json' }),
});
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
