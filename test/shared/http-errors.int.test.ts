import t from 'tap';
import { ServiceError, type ErrorCode } from '../../shared/errors.js';
import { createHttpApp, httpStatusOf } from '../../shared/http.js';

/** Every service error a route raises answers its status; any other one is a 500 that names its code. */
void t.test('service errors map to their HTTP status', async (t) => {
  const app = createHttpApp({});
  app.get<{ Params: { code: string } }>('/fail/:code', (request) => {
    const retriable = request.params.code === 'PROJECTION_PAUSED' || request.params.code === 'STORE_UNAVAILABLE';
    throw new ServiceError(request.params.code as ErrorCode, `failed with ${request.params.code}`, retriable);
  });
  t.teardown(() => app.close());

  const answers: Record<string, number> = {};
  for (const code of Object.keys(httpStatusOf)) answers[code] = (await app.inject({ url: `/fail/${code}` })).statusCode;
  t.same(answers, httpStatusOf, 'each route error answers its status');
  t.same([answers.USER_NOT_FOUND, answers.EMAIL_TAKEN, answers.CONSISTENCY_TIMEOUT, answers.EVENT_INVALID], [404, 409, 503, 500]);

  for (const code of ['PROJECTION_PAUSED', 'REBUILD_LOCKED', 'REBUILD_LOCK_LOST', 'REBUILD_ABORTED', 'STORE_MISSING', 'CONFIG_INVALID']) {
    const response = await app.inject({ url: `/fail/${code}` });
    t.equal(response.statusCode, 500, code);
    t.match(response.json(), { statusCode: 500, code, error: 'Internal Server Error', message: `failed with ${code}` });
  }
  t.equal((await app.inject({ url: '/fail/PROJECTION_PAUSED' })).headers['retry-after'], '1', 'a retriable one still says when to retry');
});
