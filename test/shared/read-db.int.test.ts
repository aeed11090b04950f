import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { liveProjectorCheckpointPages, openReadDb, readDbCheckpointPages } from '../../shared/read-db.js';
import { walFrames } from '../support/sqlite-wal.js';

/**
 * The embedded read DB's checkpoints: the live projector's connection checkpoints
 * every `liveProjectorCheckpointPages` WAL pages, so its checkpoints' flushes stay
 * short beside the event store's commits; every other connection (the rebuild, the
 * operator tools) at `readDbCheckpointPages`, SQLite's default. Each is told by the
 * WAL file's largest size, which a checkpoint bounds: the log restarts after one, so
 * the file holds at most the threshold plus the transaction that crossed it.
 */
async function largestWalFrames(t: Test, checkpointPages?: number): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'users-read-db-'));
  const file = join(dir, 'queries.sqlite');
  const knex = await openReadDb({ client: 'sqlite', file }, checkpointPages === undefined ? {} : { checkpointPages });
  t.teardown(async () => {
    await knex.destroy();
    await rm(dir, { recursive: true, force: true });
  });
  await knex.raw('CREATE TABLE T (K TEXT PRIMARY KEY, PAD TEXT)');
  // 150 transactions of 20 rows with random keys: each row a random leaf of the key's index, as a
  // new user is in USER_DATA's EMAIL and NAME indexes; some 2,500 WAL frames in all.
  for (let i = 0; i < 150; i++) {
    await knex.transaction(async (trx) => {
      await trx('T').insert(Array.from({ length: 20 }, () => ({ K: randomBytes(16).toString('hex'), PAD: 'x'.repeat(200) })));
    });
  }
  return walFrames(file);
}

void t.test("the live projector's connection checkpoints every few hundred WAL pages", async (t) => {
  const frames = await largestWalFrames(t, liveProjectorCheckpointPages);
  t.ok(frames <= liveProjectorCheckpointPages + 100, `its log holds ${frames} frames at its largest (checkpoint at ${liveProjectorCheckpointPages})`);
});

void t.test("every other connection keeps SQLite's default checkpoint", async (t) => {
  const frames = await largestWalFrames(t);
  t.ok(frames > liveProjectorCheckpointPages + 100, `its log reaches ${frames} frames (checkpoint at ${readDbCheckpointPages})`);
  t.ok(frames <= readDbCheckpointPages + 100, `and no more than its threshold allows`);
});
