import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { openReadDb } from '../shared/read-db.js';
import { migrateReadDb } from '../projector/read-db-migrations.js';

/**
 * `npm start`: the whole service on one machine, each role in its own process
 * (as they are deployed), sharing this process's environment. Migrates the read
 * DB first so the roles never race to create it. If one role dies, the others
 * are stopped and this exits non-zero; SIGINT/SIGTERM stop all gracefully.
 */
const roles: Record<string, string> = {
  'command-side': '../command-side/main.ts',
  projector: '../projector/main.ts',
  'query-side': '../query-side/main.ts',
};
const relay = { relay: '../command-side/relay-main.ts' };
/**
 * The roles that stream events allocate many short-lived objects per event: a
 * larger young generation halves their garbage collection (about 10% more
 * events/s in `npm run bench:kafka`'s projector).
 */
const nodeOptions: Record<string, string[]> = { projector: ['--max-semi-space-size=32'], relay: ['--max-semi-space-size=32'] };

async function main() {
  const config = loadConfig();
  const logger = createLogger('start', config);
  const db = await openReadDb(config.readDb);
  await migrateReadDb(db);
  await db.destroy();

  const children = new Map<string, ChildProcess>();
  let stopping = false;
  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true;
    for (const child of children.values()) child.kill(signal);
  };

  // The relay has work only when Kafka is configured.
  for (const [role, path] of Object.entries({ ...roles, ...(config.kafka ? relay : {}) })) {
    const child = spawn(process.execPath, [...(nodeOptions[role] ?? []), '--import', 'tsx', fileURLToPath(new URL(path, import.meta.url))], {
      stdio: 'inherit',
      env: process.env,
    });
    children.set(role, child);
    child.on('exit', (code, signal) => {
      children.delete(role);
      if (!stopping) {
        logger.error({ role, code, signal }, 'a role exited; stopping the others');
        process.exitCode = 1;
        stopAll('SIGTERM');
      }
      if (children.size === 0) process.exit();
    });
  }
  logger.info(
    { write: `http://${config.host}:${config.commandPort}`, read: `http://${config.host}:${config.queryPort}` },
    'users service started',
  );
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    stopAll(signals > 1 ? 'SIGKILL' : signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

main().catch((error: unknown) => {
  process.stderr.write(`users service could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
