import Fastify from 'fastify';
import { serveBaseline } from './serve-baseline.js';

/**
 * The baseline of `npm run bench:http`: a bare Fastify app with a hello-world
 * GET and a JSON-echo POST, defaults otherwise (no logger). Run as its own
 * process so it never shares an event loop with the load generator (`serveBaseline`).
 */
const app = Fastify();
app.get('/hello', () => ({ hello: 'world' }));
app.post('/echo', (request) => request.body);
await serveBaseline(app);
