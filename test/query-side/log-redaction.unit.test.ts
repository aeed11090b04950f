import { Writable } from 'node:stream';
import t from 'tap';
import { createLogger, redactedText } from '../../shared/logger.js';

/** A logger from the project's factory whose JSON lines are kept. */
function capturedLogger() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = createLogger('query-side', { logLevel: 'debug', logFormat: 'json' }, sink);
  return { logger, lines };
}

const name = 'Zebulon Quaxworth';
const email = 'zebulon.quaxworth@example.org';
const previousEmail = 'z.q.old@example.org';

void t.test('names and emails never reach the logs in clear, wherever they are logged', async (t) => {
  const { logger, lines } = capturedLogger();
  logger.info({ name, email, previousEmail }, 'top level');
  logger.info({ data: { userId: 'u-1', name, email, previousEmail } }, 'an event payload');
  logger.info({ user: { name, email } }, 'a nested object');
  logger.info({ req: { method: 'POST', url: '/users', body: { name, email } } }, 'a request body');
  logger.debug({ method: 'GET', url: `/users?email=${encodeURIComponent(email)}`, statusCode: 200 }, 'request completed');
  logger.child({ reqId: 'r-1' }).warn({ data: { name, email } }, 'through a child');
  logger.flush();
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(lines.length, 6);
  const all = lines.join('\n');
  for (const secret of [name, email, previousEmail, encodeURIComponent(email)]) t.notOk(all.includes(secret), `${secret} is not in the logs`);
  const parsed = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  t.match(parsed[0], { name: redactedText, email: redactedText, previousEmail: redactedText, msg: 'top level' });
  t.match(parsed[1], { data: { userId: 'u-1', name: redactedText, email: redactedText, previousEmail: redactedText } });
  t.match(parsed[2], { user: { name: redactedText, email: redactedText } });
  t.match(parsed[3], { req: { method: 'POST', url: '/users', body: { name: redactedText, email: redactedText } } });
  t.match(parsed[4], { url: `/users?${redactedText}`, statusCode: 200 }, 'a URL keeps its path, not its query');
  t.match(parsed[5], { reqId: 'r-1', data: { name: redactedText, email: redactedText } });
  t.ok(all.includes(redactedText));
});

void t.test("the logger's own name stays, and lines without personal data are untouched", async (t) => {
  const { logger, lines } = capturedLogger();
  logger.info({ stream: 'user-1', revision: 3, parked: { failed: 1, held: 0 } }, 'plain');
  logger.flush();
  await new Promise((resolve) => setImmediate(resolve));
  t.match(JSON.parse(lines[0]!), { name: 'query-side', stream: 'user-1', revision: 3, parked: { failed: 1, held: 0 }, msg: 'plain' });
});
