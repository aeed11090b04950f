import type { FastifyInstance, FastifyRequest } from 'fastify';

/** Fastify's code for a body it has no parser for; the error handler words its message (see `unsupportedMediaTypeMessage`). */
const unsupportedMediaType = () =>
  Object.assign(new Error('Unsupported Media Type'), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' });

const hasNoBody = (headers: FastifyRequest['headers']): boolean =>
  headers['transfer-encoding'] === undefined && (headers['content-length'] === undefined || headers['content-length'] === '0');

/**
 * The APIs read JSON bodies only. A request with a body of any other type, or
 * with a body and no content type, is 415. An empty body is no body, whatever
 * type it claims: `POST /users/:id/validation` sent with `content-type:
 * application/json` and nothing else (as many HTTP clients do) is what it
 * looks like, not a broken JSON document. Prototype poisoning (`__proto__`,
 * `constructor.prototype`) stays an error, as in Fastify's own parser.
 */
export function acceptJsonBodiesOnly(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined);
    else void parseJson(request, body as string, done);
  });
  // Every other type, and a body without one. Unknown routes answer 404 or 405 whatever the body.
  app.addContentTypeParser('*', (request, _payload, done) => {
    if (request.is404 || hasNoBody(request.headers)) done(null, undefined);
    else done(unsupportedMediaType(), undefined);
  });
}

/** What a 415 answer says: the type the APIs read and the one that came. */
export function unsupportedMediaTypeMessage(request: FastifyRequest): string {
  const given = request.headers['content-type'];
  const got = typeof given === 'string' && given !== '' ? `content-type ${JSON.stringify(given.slice(0, 100))}` : 'no content-type';
  return `expected a body with content-type application/json; got ${got}`;
}
