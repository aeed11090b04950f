import { createServer } from 'node:net';

/** Ports this process has handed out: the kernel may give a port it gave before once it is free again. */
const handedOut = new Set<number>();

/** A port the kernel picks on 127.0.0.1 and lets go again. */
function pickPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A port that was free a moment ago, on 127.0.0.1, and not one this process handed
 * out before: two calls in a row (a write API's port and a read API's) could
 * otherwise get the same port, and the second server to bind it would fail, or the
 * first would answer for both. For the tests and the benchmarks, which start
 * servers of their own.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await pickPort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}
