import { pino, type Logger, type LoggerOptions } from 'pino';
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

/** pino's options for a named logger: readable lines go through pino-pretty, off the main thread. */
export function loggerOptions(name: string, settings: LogSettings): LoggerOptions {
  if (logFormatOf(settings) === 'json') return { name, level: settings.logLevel };
  return {
    name,
    level: settings.logLevel,
    transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
  };
}

/** A named logger per role or module, on stdout (see `logFormatOf`). */
export const createLogger = (name: string, settings: LogSettings): Logger => pino(loggerOptions(name, settings));
