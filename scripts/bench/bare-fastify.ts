import Fastify from 'fastify';

/**
 * The baseline of `npm run bench:http`: a bare Fastify app with a hello-world
 * GET and a JSON-echo POST, defaults otherwise (no logger). Run as its own
 * process so it never shares an event loop with the load generator; prints its
 * port on stdout once listening.
 */
const app = Fastify();
app.get('/hello', () => ({ hello: 'world' }));
app.post('/echo', (request) => request.body);
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
