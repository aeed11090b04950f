import { pino } from 'pino';
import t from 'tap';
import { userProjector } from '../../projector/projector.js';
import { userDataRebuild } from '../../projector/rebuild.js';
import { eventStoreFeed } from '../../shared/event-feed/event-store-feed.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { userStreamId } from '../../shared/user-events.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';
import { testVault } from '../support/vault.js';

/**
 * Forgetting and the rebuild: the live projector, a fold of the log and a rebuild
 * agree on every row, also when some keys are gone; a forgotten user's row holds
 * nothing personal in any of them.
 */
const logger = pino({ level: 'silent' });

forEachReadDb(t, async (t, db) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 5 }), logger, pausePollMs: 10 });
  void projector.start();
  t.teardown(() => projector.stop());
  const caughtUp = async () => {
    const expected = JSON.stringify(await expectedRows(store));
    await waitFor(async () => JSON.stringify(await tableRows(db)) === expected, 10_000, 'the live projector to catch up');
  };

  const ids = await seedUsers(commands, 12, 'forget');
  await caughtUp();
  // Forgotten while the projector runs: some right after registering, some with a long history.
  const forgotten = [ids[0]!, ids[3]!, ids[7]!];
  for (const id of forgotten) await commands.forget(id);
  await commands.register({ name: 'After The Forgets', email: 'after@example.org' });
  await caughtUp();

  const rows = await tableRows(db);
  const erased = rows.filter((row) => forgotten.includes(row.ID_USER_DATA));
  t.equal(erased.length, 3, 'the forgotten users keep a row');
  t.ok(erased.every((row) => row.STATUS === 'forgotten' && row.NAME === '' && row.EMAIL === ''), 'anonymised: no name, no email');
  t.equal(rows.filter((row) => row.STATUS === 'forgotten').length, 3, 'nobody else is');

  // A rebuild of the same log (their keys gone) gives exactly the live rows.
  const verified = await userDataRebuild({ vault: testVault, store, db, logger }).run({ verify: true, dryRun: true });
  t.match(verified.verification, { missing: 0, extra: 0, different: 0 }, 'a rebuild finds no difference with the live table');

  t.equal(verified.usersWithoutKeys, 0, 'the forgotten users\' keys are gone with a UserForgotten in their logs');

  // A key lost without a forget (a key store restored without it): the rebuild will not swap in that user as forgotten...
  const lost = ids[5]!;
  const [first] = await store.readStream(userStreamId(lost));
  await testVault.destroy(testVault.keyIdsOf(first ? [first] : []));
  const live = await tableRows(db);
  await t.rejects(userDataRebuild({ vault: testVault, store, db, logger }).run(), {
    name: 'KeysMissingError',
    users: 1,
    example: userStreamId(lost),
    message: /^1 user would be rebuilt as forgotten though nobody forgot them/,
  });
  t.same(await tableRows(db), live, 'refused before the swap: the live table as it was');
  const looked = await userDataRebuild({ vault: testVault, store, db, logger }).run({ dryRun: true });
  t.equal(looked.usersWithoutKeys, 1, 'a dry run counts the user');
  // ...unless the operator says those keys are lost for good: then it reads that user as forgotten too.
  const rebuilt = await userDataRebuild({ vault: testVault, store, db, logger }).run({ acceptMissingKeys: true });
  t.equal(rebuilt.usersWithoutKeys, 1);
  t.equal(rebuilt.rows, 13, 'every user has a row');
  const after = await tableRows(db);
  t.match(after.find((row) => row.ID_USER_DATA === lost), { STATUS: 'forgotten', NAME: '', EMAIL: '' }, 'the user whose key is gone is rebuilt as forgotten');
  t.same(after, await expectedRows(store), 'and the rebuilt table is the fold of the log as it reads now');
});
