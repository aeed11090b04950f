import { createServer, connect, type Server, type Socket } from 'node:net';

/** One client's connection through the proxy, and the server's end of it once there is one. */
interface Link {
  client: Socket;
  upstream?: Socket;
  forwarding: boolean;
}

/**
 * A TCP proxy on 127.0.0.1 in front of a real server (e.g. MariaDB), which a test
 * can cut or stall. It simulates the server going away without stopping a shared service.
 * - `cut()` drops every connection and refuses new ones until `restore()`.
 * - `stall()` forwards nothing more, either way, and closes nothing: a server that stops
 *   answering without closing its connections (a dropped route, a frozen host). What either
 *   side sends meanwhile waits, and connections made meanwhile are accepted and held, their
 *   server not yet connected; `restore()` delivers it all, as a route that comes back does.
 *   With `{ newConnections: 'forward' }` only the connections open at the stall stop, and new
 *   ones reach the server (a firewall or NAT that lost the state of the open ones).
 */
export async function startTcpProxy(target: { host: string; port: number }) {
  const sockets = new Set<Socket>();
  const links = new Set<Link>();
  let down = false;
  let stalled: 'every connection' | 'open connections' | undefined;
  let observeClient: (() => (chunk: Buffer) => void) | undefined;

  const forward = (link: Link) => {
    if (link.forwarding) return;
    link.forwarding = true;
    if (!link.upstream) {
      const upstream = connect(target.port, target.host);
      link.upstream = upstream;
      sockets.add(upstream);
      upstream.on('error', () => close(link)).on('close', () => close(link));
    }
    link.client.pipe(link.upstream).pipe(link.client);
  };
  const hold = (link: Link) => {
    link.forwarding = false;
    link.client.unpipe();
    link.upstream?.unpipe();
    link.client.pause();
    link.upstream?.pause();
  };
  const close = (link: Link) => {
    link.client.destroy();
    link.upstream?.destroy();
    sockets.delete(link.client);
    if (link.upstream) sockets.delete(link.upstream);
    links.delete(link);
  };

  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const link: Link = { client, forwarding: false };
    sockets.add(client);
    links.add(link);
    client.on('error', () => close(link)).on('close', () => close(link));
    const observe = observeClient?.();
    if (observe) client.on('data', observe);
    if (stalled === 'every connection') hold(link);
    else forward(link);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || !address) throw new Error('proxy has no address');
  return {
    port: address.port,
    cut() {
      down = true;
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      links.clear();
    },
    stall(options: { newConnections?: 'hold' | 'forward' } = {}) {
      stalled = options.newConnections === 'forward' ? 'open connections' : 'every connection';
      for (const link of links) hold(link);
    },
    /** Ends a cut or a stall: new connections are forwarded, and what a stall held is delivered. */
    restore() {
      down = false;
      stalled = undefined;
      for (const link of links) forward(link);
    },
    /**
     * Has `observer()` make, for each connection opened from now on, a function that sees
     * every chunk its client sends, as the proxy forwards it (not while a stall holds it).
     */
    observeClients(observer: () => (chunk: Buffer) => void) {
      observeClient = observer;
    },
    async stop() {
      this.cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
