import { open } from 'node:fs/promises';

/** A WAL file's header is 32 bytes; the database's page size is its big-endian word at offset 8. */
const walHeaderBytes = 32;
/** Each frame is a 24-byte header and one page. */
const frameHeaderBytes = 24;

/**
 * How many frames the WAL file beside an SQLite database holds: its largest size since the
 * last checkpoint that truncated it, as SQLite overwrites the log from its start after a
 * checkpoint rather than shrinking it. 0 when there is no WAL file or no header yet.
 */
export async function walFrames(databaseFile: string): Promise<number> {
  const handle = await open(`${databaseFile}-wal`, 'r').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (handle === undefined) return 0;
  try {
    const { size } = await handle.stat();
    if (size < walHeaderBytes) return 0;
    const header = Buffer.alloc(walHeaderBytes);
    await handle.read(header, 0, walHeaderBytes, 0);
    return Math.floor((size - walHeaderBytes) / (header.readUInt32BE(8) + frameHeaderBytes));
  } finally {
    await handle.close();
  }
}
