import { createServer } from 'node:net';
import t from 'tap';
import { freePort } from '../../scripts/free-port.js';

void t.test('freePort never hands out a port twice, and each one it hands out can be bound', async (t) => {
  const ports: number[] = [];
  // The kernel often gives back a port just let go: many calls in a row meet that.
  for (let i = 0; i < 200; i++) ports.push(await freePort());
  t.equal(new Set(ports).size, ports.length, `${ports.length} calls, ${new Set(ports).size} different ports`);
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(ports.at(-1), '127.0.0.1', resolve);
  });
  t.equal((server.address() as { port: number }).port, ports.at(-1), 'the last one binds');
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
