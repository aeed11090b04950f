import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { repeatedSignalMs } from '../shared/lifecycle.js';
import { openReadDb } from '../shared/read-db.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { roleEnvironment, roleNodeOptions } from './role-node-options.js';

/**
 * The whole service on one machine, each role in its own process (as they are
 * deployed), sharing this process's environment: `npm start` runs the TypeScript
 * through tsx (development), `node dist/scripts/start.js` the build (production).
 * Migrates the read DB first so the roles never race to create it.
 *
 * Each role reports over an IPC channel once it is up (`reportReady`, after its
 * listen or start); "users service started" comes only when all have. A role that
 * fails on the way (a port in use, say) is named with its reason, the others are
 * stopped and this exits 1; so it does if a role dies later. SIGINT/SIGTERM drain
 * every role and exit 0 once all have exited cleanly; a second signal kills them.
 */
const compiled = import.meta.url.endsWith('.js');
const roles: Record<string, string> = {
  'command-side': '../command-side/main',
  projector: '../projector/main',
  'query-side': '../query-side/main',
};
const relay = { relay: '../command-side/relay-main' };

type RoleMessage = { ready: string } | { failed: string; message: string };
const isRoleMessage = (message: unknown): message is RoleMessage =>
  typeof message === 'object' && message !== null && ('ready' in message || 'failed' in message);

function roleArgs(role: string, path: string): string[] {
  const file = fileURLToPath(new URL(`${path}${compiled ? '.js' : '.ts'}`, import.meta.url));
  return [...(roleNodeOptions[role] ?? []), ...(compiled ? [] : ['--import', 'tsx']), file];
}

async function main() {
  const config = loadConfig();
  const logger = createLogger('start', config);
  const db = await openReadDb(config.readDb);
  await migrateReadDb(db);
  await db.destroy();

  const wanted = Object.entries({ ...roles, ...(config.kafka ? relay : {}) }); // the relay works only with Kafka
  const children = new Map<string, ChildProcess>();
  const starting = new Set(wanted.map(([role]) => role));
  const unclean: string[] = [];
  let stop: { kind: 'failure' | 'signal'; signal: NodeJS.Signals; at: number; forced: boolean } | undefined;

  const stopAll = (signal: NodeJS.Signals) => {
    for (const child of children.values()) child.kill(signal);
  };
  const fail = (role: string, reason: string) => {
    if (stop) return;
    stop = { kind: 'failure', signal: 'SIGTERM', at: Date.now(), forced: false };
    if (starting.size > 0) process.stderr.write(`users service could not start: ${role}: ${reason}\n`);
    logger.error({ role, reason }, 'a role failed; stopping the others');
    stopAll('SIGTERM');
  };
  const finish = () => {
    if (stop?.forced) process.exit(130);
    if (stop?.kind === 'signal') {
      if (unclean.length > 0) logger.error({ roles: unclean }, 'not every role stopped cleanly');
      else logger.info('every role stopped');
      process.exit(unclean.length > 0 ? 1 : 0);
    }
    process.exit(1);
  };
  const waiting = setTimeout(() => {
    if (!stop) logger.warn({ roles: [...starting] }, 'still waiting for roles to start');
  }, 30_000).unref();

  for (const [role, path] of wanted) {
    // Its own process group: a terminal's Ctrl-C reaches only this process, which passes one signal on.
    const child = spawn(process.execPath, roleArgs(role, path), { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env: roleEnvironment(role, process.env), detached: true });
    children.set(role, child);
    child.on('message', (message: unknown) => {
      if (!isRoleMessage(message)) return;
      if ('failed' in message) return fail(role, message.message);
      starting.delete(role);
      if (starting.size > 0 || stop) return;
      clearTimeout(waiting);
      logger.info(
        {
          write: `http://${config.host}:${config.commandPort}`,
          read: `http://${config.host}:${config.queryPort}`,
          roles: Object.fromEntries([...children].map(([name, { pid }]) => [name, pid])),
        },
        'users service started',
      );
    });
    child.on('error', (error) => {
      fail(role, `could not be run: ${error.message}`);
      // A process that never ran sends no 'close'.
      if (child.pid === undefined && children.delete(role) && children.size === 0) finish();
    });
    // 'close' rather than 'exit': it comes after the last message, so a failure's reason is never lost.
    child.on('close', (code, signal) => {
      children.delete(role);
      if (!stop) fail(role, `${starting.has(role) ? 'exited before it was ready' : 'exited'} (${signal ?? `exit code ${code}`})`);
      else {
        if (code !== 0 && signal !== stop.signal) unclean.push(role);
        logger.info({ role, pid: child.pid, code, signal }, 'role stopped');
      }
      if (children.size === 0) finish();
    });
  }

  const onSignal = (signal: NodeJS.Signals) => {
    if (stop) {
      // Already stopping (on a signal, or after a role failed): a later signal kills whatever still runs.
      if (stop.forced || (stop.kind === 'signal' && Date.now() - stop.at < repeatedSignalMs)) return;
      stop.forced = true;
      logger.warn({ signal }, 'second signal: killing every role');
      return stopAll('SIGKILL');
    }
    stop = { kind: 'signal', signal, at: Date.now(), forced: false };
    logger.info({ signal }, 'stopping every role');
    stopAll(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

main().catch((error: unknown) => {
  process.stderr.write(`users service could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
