import { loadConfig } from '../shared/config.js';
import { openEventStore } from '../shared/event-store/open-event-store.js';
import { exitOnStartupError, onShutdownSignal, reportReady } from '../shared/lifecycle.js';
import { openConfiguredVault } from '../shared/personal-data/open-vault.js';
import { startTracing } from '../shared/tracing.js';
import { createLogger } from '../shared/logger.js';
import { isRetriable } from '../shared/retry.js';
import { buildConfiguredCommandApp } from './app.js';
import { checkEmailHashSecret } from './email-reservations.js';

/** The command side as its own process: the write API on COMMAND_PORT. */
async function main() {
  await startTracing('command-side');
  const config = loadConfig(process.env, { servesWriteApi: true });
  const logger = createLogger('command-side', config);
  const store = openEventStore(config);
  const { vault, keyStore } = await openConfiguredVault(config);
  // Another secret than the other command sides' is refused at start; with the store down, at the first registration.
  await checkEmailHashSecret(store, vault.emailHash, { replace: config.emailHashSecretRecord === 'replace' }).catch((error: unknown) => {
    if (!isRetriable(error)) throw error;
    logger.warn({ err: error }, 'event store unavailable; the email hash secret is checked at the first registration');
  });
  const app = buildConfiguredCommandApp(config, { store, vault });
  onShutdownSignal(logger, async () => {
    await app.close();
    await store.close();
    await keyStore.close();
  });
  await app.listen({ host: config.host, port: config.commandPort });
  reportReady('command-side');
}

main().catch(exitOnStartupError('command-side'));
