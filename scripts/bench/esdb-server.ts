import { startEsdbTestServer } from '../../test/support/esdb-test-server.js';

/**
 * The EventStoreDB test server as a process of its own, for the benchmarks (`npm run bench:http`, `npm run bench:kafka`):
 * prints its connection string once listening; SIGTERM stops it.
 */
const server = await startEsdbTestServer();
process.stdout.write(`${server.connectionString}\n`);
process.on('SIGTERM', () => void server.stop().then(() => process.exit(0)));
