import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { StoreMissingError } from './errors.js';

/**
 * For commands that only read a store: `file` must be there. The error names the
 * file, and its directory when that is missing too (a mistyped DATA_DIR), and
 * the settings the path comes from.
 */
export function requireExistingFile(file: string, what: string, settings: string): void {
  if (existsSync(file)) return;
  const directory = dirname(file);
  const missing = existsSync(directory) ? `no ${what} at ${file}` : `no ${what} at ${file}: the directory ${directory} does not exist`;
  throw new StoreMissingError(`${missing}; nothing was created (the path comes from ${settings})`);
}
