import { Writable } from 'node:stream';
import t from 'tap';
import { StoreUnavailableError } from '../../shared/errors.js';
import { createLogger } from '../../shared/logger.js';
import { forEachReadDb } from '../support/read-dbs.js';

/**
 * A failed statement's values never reach a log line or an error message (which
 * traces carry too): a batch's names and emails would outlive the people's erasure
 * there. knex keeps its placeholders; mysql2's `sql` (values filled in) is dropped
 * from logged errors, also from an error that wraps it as its cause.
 */
const name = 'Philippa Quenneville-Ardagh';
const email = 'philippa.quenneville@example.org';

forEachReadDb(t, async (t, db) => {
  const failed = await db('USER_DATA')
    .insert({ ID_USER_DATA: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001', NAME: name, EMAIL: email, NO_SUCH_COLUMN: 1 })
    .then(
      () => undefined,
      (error: unknown) => error as Error & { sql?: string },
    );
  t.ok(failed, 'the statement failed');
  t.notOk(failed!.message.includes(name) || failed!.message.includes(email), `the message keeps placeholders: ${failed!.message.slice(0, 120)}`);
  t.match(failed!.message, /values \(\?, \?, \?, \?\)/i, 'and says which statement failed');

  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  const logger = createLogger('projector', { logLevel: 'info', logFormat: 'json' }, sink);
  logger.error({ err: failed }, 'batch failed to commit');
  logger.warn({ err: new StoreUnavailableError('read DB unavailable', { cause: failed }) }, 'read DB unavailable; retrying');
  logger.flush();
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(lines.length, 2);
  for (const line of lines) {
    t.notOk(line.includes(name) || line.includes(email), 'no name or email in the line');
    t.match(JSON.parse(line), { err: { message: /Unknown column|no column named|NO_SUCH_COLUMN/i } }, 'the error still says what went wrong');
  }
});
