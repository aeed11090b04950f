import { buildConfiguredCommandApp } from '../../command-side/app.js';
import { loadConfig } from '../../shared/config.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import { openVault } from '../../shared/personal-data/vault.js';
import { serveBaseline } from './serve-baseline.js';

/**
 * POST /users' request path with nothing stored, for `npm run bench:http`: the
 * write API exactly as `command-side/main.ts` builds it (`buildConfiguredCommandApp`:
 * hooks, validation, the decider, the email claim, sealing, metrics), over the
 * in-memory event store and key store instead of the embedded ones. No disk, no
 * writer thread, no projector beside it: its pace is the most any store could give
 * this request path on this machine, as the durable echo's is the most this store
 * could give any request path. No rate limit, logs at warn (at the bench's info a
 * request logs nothing either; this keeps stdout for the port). Runs as
 * `serveBaseline` says.
 */
const config = loadConfig({ ...process.env, RATE_LIMIT_PER_MINUTE: '0', LOG_LEVEL: 'warn' }, { servesWriteApi: true });
const store = inMemoryEventStore();
const vault = await openVault({ keyStore: inMemoryKeyStore(), cacheMs: config.keyCacheMs });
await serveBaseline(buildConfiguredCommandApp(config, { store, vault }));
