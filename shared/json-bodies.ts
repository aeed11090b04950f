import { isUtf8 } from 'node:buffer';
import type { FastifyInstance, FastifyRequest } from 'fastify';

/** Fastify's code for a body it has no parser for; the error handler words its message (see `unsupportedMediaTypeMessage`). */
const unsupportedMediaType = () =>
  Object.assign(new Error('Unsupported Media Type'), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' });

/** A body that claims JSON but is not UTF-8: 400, before anything reads it (see `acceptJsonBodiesOnly`). */
const notUtf8 = () =>
  Object.assign(new Error('the body is not valid UTF-8: JSON between systems must be UTF-8 (RFC 8259, section 8.1)'), {
    statusCode: 400,
    code: 'BODY_NOT_UTF8',
  });

/** The charset parameter of a content type, lower-cased and unquoted; undefined when there is none. */
function charsetOf(contentType: string | undefined): string | undefined {
  const match = /;\s*charset\s*=\s*("?)([^";\s]*)\1/i.exec(contentType ?? '');
  return match?.[2]?.toLowerCase();
}

/** UTF-8 under either of its registered names; JSON has no other encoding (RFC 8259, section 8.1). */
const isUtf8Charset = (charset: string | undefined) => charset === undefined || charset === 'utf-8' || charset === 'utf8';

const hasNoBody = (headers: FastifyRequest['headers']): boolean =>
  headers['transfer-encoding'] === undefined && (headers['content-length'] === undefined || headers['content-length'] === '0');

/**
 * The APIs read JSON bodies only. A request with a body of any other type, or
 * with a body and no content type, is 415. An empty body is no body, whatever
 * type it claims: `POST /users/:id/validation` sent with `content-type:
 * application/json` and nothing else (as many HTTP clients do) is what it
 * looks like, not a broken JSON document. Prototype poisoning (`__proto__`,
 * `constructor.prototype`) stays an error, as in Fastify's own parser.
 * JSON is UTF-8: a body that declares another charset is 415, and one whose bytes
 * are not UTF-8 is 400. Decoded as Node decodes by default, such bytes would become
 * U+FFFD and be kept, a person's name changed for good, with a 2xx.
 */
export function acceptJsonBodiesOnly(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer;
    // Unknown routes answer 404 or 405 whatever the JSON (a body over the limit is refused while it is read: 413).
    if (bytes.length === 0 || request.is404) done(null, undefined);
    else if (!isUtf8Charset(charsetOf(request.headers['content-type']))) done(unsupportedMediaType(), undefined);
    else if (!isUtf8(bytes)) done(notUtf8(), undefined);
    else void parseJson(request, bytes.toString('utf8'), done);
  });
  // Every other type, and a body without one. Unknown routes answer 404 or 405 whatever the body's type.
  app.addContentTypeParser('*', (request, _payload, done) => {
    if (request.is404 || hasNoBody(request.headers)) done(null, undefined);
    else done(unsupportedMediaType(), undefined);
  });
}

/** What a 415 answer says: the type the APIs read and the one that came. */
export function unsupportedMediaTypeMessage(request: FastifyRequest): string {
  const given = typeof request.headers['content-type'] === 'string' ? request.headers['content-type'] : '';
  const charset = charsetOf(given);
  if (/^\s*application\/json\s*(;|$)/i.test(given) && !isUtf8Charset(charset)) {
    return `expected a JSON body in UTF-8 (charset utf-8, or none); got charset ${JSON.stringify((charset ?? '').slice(0, 40))}`;
  }
  const got = given !== '' ? `content-type ${JSON.stringify(given.slice(0, 100))}` : 'no content-type';
  return `expected a body with content-type application/json; got ${got}`;
}
