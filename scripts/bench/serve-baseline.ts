import type { FastifyInstance } from 'fastify';

/**
 * How a baseline app of `npm run bench:http` runs in its own process (`startChild`
 * reads its first line): listens on a free port of 127.0.0.1, prints that port on
 * stdout, and on SIGTERM closes, runs `cleanUp` (its store, its files; whether or not the close went
 * well) and exits.
 */
export async function serveBaseline(app: FastifyInstance, cleanUp: () => unknown = () => {}): Promise<void> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
  process.on('SIGTERM', () =>
    void app
      .close()
      .finally(cleanUp)
      .finally(() => process.exit(0)),
  );
}
