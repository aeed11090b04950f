import { loadConfig } from '../shared/config.js';
import { openEventStore } from '../shared/event-store/open-event-store.js';
import { exitOnStartupError, onShutdownSignal, reportReady } from '../shared/lifecycle.js';
import { openConfiguredVault } from '../shared/personal-data/open-vault.js';
import { startTracing } from '../shared/tracing.js';
import { createLogger } from '../shared/logger.js';
import { buildConfiguredCommandApp } from './app.js';

/** The command side as its own process: the write API on COMMAND_PORT. */
async function main() {
  await startTracing('command-side');
  const config = loadConfig(process.env, { servesWriteApi: true });
  const logger = createLogger('command-side', config);
  const store = openEventStore(config);
  const { vault, keyStore } = await openConfiguredVault(config);
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
