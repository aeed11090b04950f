import { pino, stdSerializers, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from './config.js';

type LogSettings = Pick<Config, 'logLevel'> & Partial<Pick<Config, 'logFormat' | 'env'>>;

/**
 * JSON lines for machines, readable lines for a person at a terminal. `auto` (the
 * default) is readable only when stdout is a terminal and NODE_ENV is not
 * production: a role under `npm start` in a terminal prints readable lines, the
 * same role in a container, under a process manager or in a test (stdout a
 * pipe or a file) prints JSON.
 */
export function logFormatOf(settings: LogSettings, stdoutIsTerminal = process.stdout.isTTY === true): 'json' | 'pretty' {
  const format = settings.logFormat ?? 'auto';
  if (format !== 'auto') return format;
  return stdoutIsTerminal && settings.env !== 'production' ? 'pretty' : 'json';
}

/** What a redacted value is logged as. */
export const redactedText = '[redacted]';

/**
 * Names and email addresses never reach the logs in clear (GDPR: a forgotten
 * person must not live on in log files). pino's `redact` censors these paths in
 * every line (and in child bindings); one level of nesting is covered by
 * wildcards (`data.email`, `user.name`, `body.previousEmail`...), request bodies
 * explicitly. A URL keeps its path and loses its query string (`?email=...`).
 * A top-level `name` is pino's own (the logger's name) and stays; a person's name
 * logged at the top level is censored by the `log` formatter instead. `err.name`
 * is censored by the wildcard too: `err.type` still names the error's class.
 */
export const redactPaths: readonly string[] = [
  'email',
  'previousEmail',
  '*.name',
  '*.email',
  '*.previousEmail',
  'req.body.name',
  'req.body.email',
  'req.body.previousEmail',
  'url',
  'req.url',
];

const censor = (value: unknown, path: string[]): unknown =>
  path[path.length - 1] === 'url' && typeof value === 'string' ? value.replace(/\?.*$/s, (query) => (query ? `?${redactedText}` : '')) : redactedText;

/**
 * An error as pino serialises it, without the statement a database driver put on it:
 * mysql2 keeps the failed statement's text, its values filled in, as `sql` (a batch's
 * names and emails), on the error and on whatever wraps it as a cause. knex is told not
 * to put values into its messages (`compileSqlOnError: false`, `read-db.ts`).
 */
function serializeError(error: unknown): unknown {
  const withoutStatements = (value: unknown, depth: number): unknown => {
    if (typeof value !== 'object' || value === null || depth > 5) return value;
    if (Array.isArray(value)) return value.map((item) => withoutStatements(item, depth + 1));
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) out[key] = key === 'sql' ? redactedText : withoutStatements(inner, depth + 1);
    return out;
  };
  return withoutStatements(stdSerializers.err(error as Error), 0);
}

/** The options every logger of the project shares: the level, redaction. */
function commonOptions(name: string, settings: LogSettings): LoggerOptions {
  return {
    name,
    level: settings.logLevel,
    redact: { paths: [...redactPaths], censor },
    serializers: { err: serializeError },
    formatters: {
      // The one path `redact` cannot take: top-level `name` (pino's own for the logger's name, in the bindings).
      log: (object) => (Object.hasOwn(object, 'name') ? { ...object, name: redactedText } : object),
    },
  };
}

/** pino's options for a named logger: readable lines go through pino-pretty, off the main thread. */
export function loggerOptions(name: string, settings: LogSettings): LoggerOptions {
  if (logFormatOf(settings) === 'json') return commonOptions(name, settings);
  return {
    ...commonOptions(name, settings),
    transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
  };
}

/** A named logger per role or module, on stdout (see `logFormatOf`). */
export const createLogger = (name: string, settings: LogSettings, destination?: DestinationStream): Logger =>
  destination === undefined ? pino(loggerOptions(name, settings)) : pino(loggerOptions(name, settings), destination);
