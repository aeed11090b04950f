import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { pino, type Logger } from 'pino';
import t, { type Test } from 'tap';
import { beginPreparedOnMariaDb } from '../../projector/mariadb-batch.js';
import { applyBatch, prepareBatch } from '../../projector/apply-batch.js';
import { userProjector } from '../../projector/projector.js';
import { userRowFrom } from '../../projector/user-row.js';
import type { EventFeed, FeedBatch, ProjectedEvent } from '../../shared/event-feed/port.js';
import { checkpointTable } from '../../shared/read-model/checkpoints.js';
import { userDataTable, type UserRow } from '../../shared/read-model/user-row.js';
import type { UserEvent } from '../../shared/user-events.js';
import { openUnlessAbsent, readDbsUnderTest } from '../support/read-dbs.js';
import { everything, randomLog } from '../support/random-log.js';
import { seededRandom } from '../support/seeded-random.js';
import { waitFor } from '../support/seed.js';

/**
 * The Kafka-fed projector on MariaDB begins the next batch (its reads and its
 * fold, in a transaction of its own) while the one before it commits, taking the
 * rows both touch from the one before (`projector/projector.ts`,
 * `projector/mariadb-batch.ts`). Against the same projector applying one batch at
 * a time (a feed that is not told when a batch is applied), from the same random
 * log: the same rows, checkpoints and quarantine; the feed told of each batch in
 * order and only once the read DB holds it; a batch whose COMMIT fails applied
 * again, and the batch begun after it begun again.
 */
const logger = pino({ level: 'silent' });
const seed = Number(process.env.FUZZ_SEED ?? 20261203);
const mariadb = readDbsUnderTest.find((kind) => kind.name === 'mariadb')!;

interface Recorded {
  /** What happened, in order: `asked k` (the batch after k was asked for), `applied k`. */
  steps: string[];
  /** Per batch, the checkpoint the read DB held when the feed was told it was applied. */
  heldWhenApplied: Promise<string | undefined>[];
}

/** A feed over fixed batches; with `confirming`, it sets `applied` and records when each batch is asked for and confirmed. */
function batchFeed(db: Knex, batches: ProjectedEvent[][], confirming: boolean): EventFeed & Recorded {
  const recorded: Recorded = { steps: [], heldWhenApplied: [] };
  let close!: () => void;
  const closed = new Promise<void>((resolve) => (close = resolve));
  return {
    ...recorded,
    async *batches() {
      for (const [k, events] of batches.entries()) {
        const batch: FeedBatch = { events, checkpoints: new Map([['log', events.at(-1)!.position!.toString()]]) };
        if (confirming) {
          batch.applied = () => {
            recorded.steps.push(`applied ${k}`);
            recorded.heldWhenApplied[k] = db(checkpointTable).where({ SOURCE: 'log' }).first('POSITION').then((row: { POSITION: string } | undefined) => row?.POSITION);
          };
        }
        yield batch;
        recorded.steps.push(`asked ${k}`);
      }
      await closed; // a feed does not end by itself; the projector's stop closes it
    },
    async close() {
      close();
    },
  };
}

async function project(t: Test, db: Knex, feed: EventFeed, batches: number, options: { fold?: typeof userRowFrom; logger?: Logger } = {}) {
  const projector = userProjector({ db, feed, logger: options.logger ?? logger, ...(options.fold ? { fold: options.fold } : {}) });
  const running = projector.start();
  running.catch(() => {});
  t.teardown(() => projector.stop());
  // A projector that fails says why at once, rather than as a timeout.
  await Promise.race([running, waitFor(() => projector.status().batchesApplied >= batches, 60_000, `${batches} batches applied`)]);
  return projector;
}

function cut(log: ProjectedEvent[], random: () => number): ProjectedEvent[][] {
  const batches: ProjectedEvent[][] = [];
  for (let i = 0; i < log.length; ) batches.push(log.slice(i, (i += 1 + Math.floor(random() * 12))));
  return batches;
}

void t.test('overlapped batches leave the read DB as one batch at a time does; the feed is told in order, after each commit', async (t) => {
  const random = seededRandom(seed);
  const first = await openUnlessAbsent(t, mariadb);
  if (!first) return;
  const { db: overlapped } = first;
  const { db: oneByOne } = await mariadb.open(t);
  const log = randomLog(random, 40);
  const batches = cut(log, random);
  const confirming = batchFeed(overlapped, batches, true);
  await project(t, overlapped, confirming, batches.length);
  await project(t, oneByOne, batchFeed(oneByOne, batches, false), batches.length);

  const [a, b] = [await everything(overlapped), await everything(oneByOne)];
  t.ok(a.rows.length > 10 && a.parked.length > 0, `a log with rows (${a.rows.length}) and a quarantine (${a.parked.length}); seed ${seed}`);
  t.same(a, b, `after ${batches.length} batches of ${log.length} events: the same rows, checkpoints and quarantine`);

  const applied = confirming.steps.filter((step) => step.startsWith('applied'));
  t.same(applied, batches.map((_, k) => `applied ${k}`), 'the feed told of every batch once, in order');
  const held = await Promise.all(confirming.heldWhenApplied);
  const early = batches.flatMap((events, k) => (BigInt(held[k] ?? -1) >= BigInt(events.at(-1)!.position!) ? [] : [k]));
  t.same(early, [], 'each batch told applied only once its checkpoint is in the read DB');
  const ahead = batches.filter((_, k) => confirming.steps.indexOf(`asked ${k}`) < confirming.steps.indexOf(`applied ${k}`)).length;
  t.ok(ahead > batches.length / 4, `the next batch asked for while one committed: ${ahead} times of ${batches.length}`);
});

void t.test('a batch whose COMMIT fails is applied again the usual way, and the one begun after it begun again', async (t) => {
  const random = seededRandom(seed + 1);
  const first = await openUnlessAbsent(t, mariadb);
  if (!first) return;
  const { db: overlapped } = first;
  const { db: oneByOne } = await mariadb.open(t);
  // Clean batches (no poison, no forget), so every one is begun ahead of its commit; one rename's row
  // cannot be written (STATUS longer than its column): its batch fails at COMMIT, every time.
  const log = randomLog(random, 30).filter((e) => e.type !== 'UserForgotten' && typeof (e.data as { name?: unknown }).name !== 'number');
  const failing = log.find((e, i) => i > log.length / 2 && e.type === 'UserRenamed')!;
  (failing.data as { name: string }).name = 'Fails at commit';
  const fold: typeof userRowFrom = (before, event, revision) => {
    const row = userRowFrom(before, event, revision);
    return row && event.type === 'UserRenamed' && event.data.name === 'Fails at commit' ? { ...row, STATUS: 'x'.repeat(40) as UserRow['STATUS'] } : row;
  };
  const batches = cut(log, random);
  const warnings: string[] = [];
  const recording = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
  await project(t, overlapped, batchFeed(overlapped, batches, true), batches.length, { fold, logger: recording });
  await project(t, oneByOne, batchFeed(oneByOne, batches, false), batches.length, { fold });
  t.ok(warnings.includes('batch failed to commit; applying it again'), 'the batch begun ahead failed at its COMMIT');
  const [a, b] = [await everything(overlapped), await everything(oneByOne)];
  t.match(a.parked, [{ STREAM_ID: failing.streamId, REVISION: failing.revision, STATE: 'failed' }], 'the event that cannot be written parked, alone');
  t.same(a, b, 'the same rows, checkpoints and quarantine as one batch at a time');
});

/** One user's events, and its row as registered (revision 0): what a batch begun ahead carries from the batch before it. */
function oneUser() {
  const userId = randomUUID();
  const streamId = `user-${userId}`;
  const at = '2026-01-01T00:00:00.000Z';
  const event = (revision: number, type: string, data: Record<string, unknown>): ProjectedEvent => ({ streamId, revision, type, data: { userId, occurredAt: at, ...data }, position: BigInt(revision + 1) });
  const registered = event(0, 'UserRegistered', { name: 'Ada', email: 'ada@example.org' });
  const registeredRow = userRowFrom(undefined, { type: 'UserRegistered', data: registered.data } as UserEvent, 0)!;
  return { userId, event, registeredRow };
}

void t.test('a row another writer moved further is not written back by a batch that folded an older one', async (t) => {
  const opened = await openUnlessAbsent(t, mariadb);
  if (!opened) return;
  const { db } = opened;
  const { userId, event, registeredRow: stale } = oneUser();
  const renamed = event(1, 'UserRenamed', { name: 'Ada L.' });
  // Another projector already holds the row at revision 2.
  await db(userDataTable).insert({ ...stale, NAME: 'Ada Lovelace', VERSION: 2 });
  // A batch begun with the row as it stood at revision 0 (taken from the batch before it, say).
  const open = await beginPreparedOnMariaDb(db, prepareBatch([renamed], new Map([['log', '2']])), new Map([[userId, stale]]));
  t.equal(open?.rows, 1, 'the batch folds the rename over the row it was given');
  await open!.commit();
  t.match(await db(userDataTable).where({ ID_USER_DATA: userId }).first(), { NAME: 'Ada Lovelace', VERSION: 2 }, 'the newer row stands');
  t.match(await db(checkpointTable).where({ SOURCE: 'log' }).first(), { POSITION: '2' }, 'the checkpoint moves on');
});

void t.test('a batch folded over a row taken from the batch before it does not write over what dead-letters applied meanwhile', async (t) => {
  const opened = await openUnlessAbsent(t, mariadb);
  if (!opened) return;
  const { db } = opened;
  const { userId, event, registeredRow: carriedRow } = oneUser();
  // Revisions 1 to 3 were parked, then released by `dead-letters retry` while the batch before this one
  // committed: the row now holds the new email (revision 2) at VERSION 3.
  await db(userDataTable).insert({ ...carriedRow, NAME: 'Ada L.', EMAIL: 'ada@lovelace.dev', VERSION: 3 });
  const renamed = event(4, 'UserRenamed', { name: 'Countess of Lovelace' });
  const batch = prepareBatch([renamed], new Map([['log', '5']]));
  // The batch begun with the row as the batch before it left it (VERSION 0), as the overlapped projector does.
  const open = await beginPreparedOnMariaDb(db, batch, new Map([[userId, carriedRow]]));
  if (open) await open.commit();
  else await applyBatch(db, [renamed], new Map([['log', '5']]));
  t.match(
    await db(userDataTable).where({ ID_USER_DATA: userId }).first(),
    { NAME: 'Countess of Lovelace', EMAIL: 'ada@lovelace.dev', VERSION: 4 },
    'the rename lands on the row as it stands, the email changed meanwhile kept',
  );
});
