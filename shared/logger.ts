import { pino, type Logger } from 'pino';
import type { Config } from './config.js';

/** A named logger per role or module; JSON lines on stdout. */
export const createLogger = (name: string, config: Pick<Config, 'logLevel'>): Logger =>
  pino({ name, level: config.logLevel });
