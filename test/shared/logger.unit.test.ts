import t from 'tap';
import { logFormatOf, loggerOptions } from '../../shared/logger.js';

void t.test('auto: readable lines on a terminal unless NODE_ENV=production, JSON everywhere else', async (t) => {
  const auto = { logLevel: 'info' as const, logFormat: 'auto' as const };
  t.equal(logFormatOf({ ...auto, env: 'development' }, true), 'pretty', 'a developer at a terminal');
  t.equal(logFormatOf({ ...auto, env: 'test' }, true), 'pretty');
  t.equal(logFormatOf({ ...auto, env: 'production' }, true), 'json', 'production, even at a terminal');
  t.equal(logFormatOf({ ...auto, env: 'development' }, false), 'json', 'a pipe or a file: a test, a container, a log collector');
  t.equal(logFormatOf({ logLevel: 'info' }, false), 'json', 'no format given is auto');
});

void t.test('LOG_FORMAT overrides the guess either way', async (t) => {
  t.equal(logFormatOf({ logLevel: 'info', logFormat: 'pretty', env: 'production' }, false), 'pretty');
  t.equal(logFormatOf({ logLevel: 'info', logFormat: 'json', env: 'development' }, true), 'json');
});

void t.test('readable lines go through pino-pretty as a transport; JSON needs none', async (t) => {
  const json = loggerOptions('query-side', { logLevel: 'debug', logFormat: 'json' });
  t.match(json, { name: 'query-side', level: 'debug', redact: { paths: Array } });
  t.notOk('transport' in json, 'JSON lines need no transport');
  t.match(loggerOptions('query-side', { logLevel: 'warn', logFormat: 'pretty' }), { name: 'query-side', level: 'warn', transport: { target: 'pino-pretty' } });
});
