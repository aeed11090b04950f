import { v7 as uuidv7 } from 'uuid';
import { buildCommandApp, configuredCommandAppOptions } from '../../command-side/app.js';
import type { UserCommands } from '../../command-side/user-commands.js';
import { loadConfig } from '../../shared/config.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { serveBaseline } from './serve-baseline.js';

/**
 * POST /users' HTTP layer alone, for `npm run bench:http`: the write API exactly as
 * `command-side/main.ts` configures it (`configuredCommandAppOptions`: its hooks,
 * request ids, security headers, metrics, body and header validation, the 201
 * with its Location and consistency token), around commands that do no work: a
 * registration answers a fresh id at revision 0 at once. No decider, email claim,
 * sealing or store. Its pace is the most any registration could reach through this
 * API on this machine, as the bare echo's is through Fastify alone. The other
 * commands are not measured and refuse. No rate limit, logs at warn, as the write
 * API in memory (`write-api-in-memory.ts`). Runs as `serveBaseline` says.
 */
const config = loadConfig({ ...process.env, RATE_LIMIT_PER_MINUTE: '0', LOG_LEVEL: 'warn' }, { servesWriteApi: true });
const notMeasured = () => Promise.reject(new Error('only POST /users is measured here'));
const commands: UserCommands = {
  register: () => Promise.resolve({ id: uuidv7(), revision: 0 }),
  rename: notMeasured,
  changeEmail: notMeasured,
  validate: notMeasured,
  deactivate: notMeasured,
  forget: notMeasured,
  personalData: notMeasured,
};
await serveBaseline(buildCommandApp({ ...configuredCommandAppOptions(config), commands, store: inMemoryEventStore() }));
