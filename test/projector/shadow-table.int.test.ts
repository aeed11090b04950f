import knexFactory from 'knex';
import t from 'tap';
import type { ProjectionControl } from '../../projector/projection-control.js';
import { shadowUserData } from '../../projector/shadow-table.js';
import { userRowRead, type UserRow } from '../../shared/read-model/user-row.js';
import { forEachReadDb } from '../support/read-dbs.js';

/**
 * The rebuild's writes to its shadow table: every value arrives as it was,
 * whichever way the rows travel (on MariaDB, LOAD DATA's text format for new
 * rows, or INSERTs where the server refuses it), and a write that would lose a
 * row fails instead.
 */
const row = (id: string, name: string, email: string, extra: Partial<UserRow> = {}): UserRow => ({
  ID_USER_DATA: id,
  NAME: name,
  EMAIL: email,
  STATUS: 'registered',
  DATE_REGISTER: '2026-01-02 03:04:05.678',
  DATE_VALIDATED: null,
  DATE_DEACTIVATED: null,
  DATE_UPDATED: '2026-01-02 03:04:05.678',
  VERSION: 0,
  ...extra,
});

// Every character LOAD DATA's text format treats specially, SQL's quotes, and text outside the BMP.
const awkward: UserRow[] = [
  row('00000000-0000-7000-8000-000000000001', 'tab\there', 'a@example.org'),
  row('00000000-0000-7000-8000-000000000002', 'new\nline and cr\r', 'b@example.org'),
  row('00000000-0000-7000-8000-000000000003', 'back\\slash \\t \\n', 'c@example.org'),
  row('00000000-0000-7000-8000-000000000004', '\\N', 'd@example.org'),
  row('00000000-0000-7000-8000-000000000005', 'nul\0byte', 'e@example.org'),
  row('00000000-0000-7000-8000-000000000006', `quotes ' " \``, "o'brien@example.org"),
  row('00000000-0000-7000-8000-000000000007', 'Zoë 😀 𝄞', 'f@example.org', {
    STATUS: 'deactivated',
    DATE_VALIDATED: '2026-01-03 00:00:00.000',
    DATE_DEACTIVATED: '2026-01-04 00:00:00.001',
    VERSION: 4,
  }),
  row('00000000-0000-7000-8000-000000000008', '', '', { STATUS: 'forgotten', VERSION: 5 }),
];

const sorted = (rows: UserRow[]) =>
  rows.map(userRowRead).sort((a, b) => (a.ID_USER_DATA < b.ID_USER_DATA ? -1 : 1));

forEachReadDb(t, async (t, db, kind) => {
  const shadow = shadowUserData(db);
  // Both read DBs hand DATETIME(3) back as the text it was written as (MariaDB: `dateStrings`).
  const shadowRows = async () => sorted((await db(shadow.name).select()) as UserRow[]);

  t.beforeEach(async () => {
    await shadow.drop();
    await shadow.create();
  });
  t.teardown(() => shadow.drop());

  await t.test('new rows arrive exactly as written, awkward characters and NULLs included', async (t) => {
    await shadow.write(awkward, '7', { newRows: true });
    t.same(await shadowRows(), sorted(awkward));
  });

  await t.test('rows written again are upserted, as they were', async (t) => {
    await shadow.write(awkward, undefined, { newRows: true });
    const renamed = awkward.map((r) => ({ ...r, NAME: `${r.NAME}\t(again)`, VERSION: r.VERSION + 1 }));
    await shadow.write(renamed, undefined, { newRows: false });
    t.same(await shadowRows(), sorted(renamed));
  });

  await t.test('many new rows, over several statements, arrive exactly', async (t) => {
    // About 1.6 MB of text: two statements of about 1 MiB each.
    const many = Array.from({ length: 12_000 }, (_, i) => {
      const like = awkward[i % awkward.length]!;
      return { ...like, ID_USER_DATA: `00000000-0000-7000-8000-${String(100_000 + i).padStart(12, '0')}`, NAME: `${like.NAME} ${'n'.repeat(i % 97)}` };
    });
    await shadow.write(many, undefined, { newRows: true });
    t.same(await shadowRows(), sorted(many));
  });

  if (kind !== 'mariadb') return;

  await t.test('a new row that is already there fails the write rather than being passed over', async (t) => {
    await shadow.write(awkward.slice(0, 2), undefined, { newRows: true });
    // LOAD DATA LOCAL takes the other row and only warns of this one: the write checks the count.
    await t.rejects(shadow.write(awkward.slice(1, 3), undefined, { newRows: true }), /took 1 of 2 rows with 1 warnings/, 'the duplicate ID is an error');
    t.same(await shadowRows(), sorted(awkward.slice(0, 2)), 'and the failed write left nothing of itself');
  });

  if (kind === 'mariadb') {
    await t.test('a failure after the rename says the rebuilt table is live, not that nothing changed', async (t) => {
      await shadow.write(awkward, '9', { newRows: true });
      // The bookkeeping after the swap fails for good (here: clearing the pause).
      const control = {
        extendPause: () => Promise.resolve(true),
        clearPause: () => Promise.reject(new Error('the connection was lost')),
      } as unknown as ProjectionControl;
      await t.rejects(shadow.swap(control, '9', 10_000), {
        name: 'SwapUnfinishedError',
        message: /^the rebuilt table was swapped in \(it is the live USER_DATA now\).*the connection was lost; run the rebuild again/,
      });
      t.same(sorted((await db('USER_DATA').select()) as UserRow[]), sorted(awkward), 'the live table is the rebuilt one');
      t.same(await shadow.dropLeftovers(), ['USER_DATA_OLD'], 'the old table is what the next run drops');
    });
  }

  await t.test('where the server refuses LOAD DATA LOCAL, new rows go by INSERT', async (t) => {
    // The same database through a client that does not offer local files: the server answers 4166.
    const { config } = db.client as { config: { connection: Record<string, unknown> } };
    const refusing = knexFactory({ client: 'mysql2', connection: { ...config.connection, flags: '-LOCAL_FILES' }, pool: { min: 0, max: 2 } });
    t.teardown(() => refusing.destroy());
    await refusing.raw(`LOAD DATA LOCAL INFILE 'rows' INTO TABLE ${shadow.name}`).then(
      () => t.fail('this client must be refused LOAD DATA LOCAL'),
      (error: unknown) => t.match(error, { errno: 4166 }, 'this client is refused LOAD DATA LOCAL'),
    );
    const fallback = shadowUserData(refusing);
    await fallback.write(awkward, '9', { newRows: true });
    await fallback.write(awkward.slice(0, 1), undefined, { newRows: true }).then(
      () => t.fail('a duplicate must fail by INSERT too'),
      (error: unknown) => t.match(error, { code: 'ER_DUP_ENTRY' }, 'a duplicate fails by INSERT too'),
    );
    t.same(await shadowRows(), sorted(awkward), 'every row arrived by INSERT');
  });
});
