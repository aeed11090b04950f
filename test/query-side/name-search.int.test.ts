import t from 'tap';
import { idOrderMostRows, indexRouteMostMatches, openUserReads, type UserRowFilter } from '../../query-side/user-reads.js';
import { foldName } from '../../shared/read-model/name-search.js';
import { forEachReadDb } from '../support/read-dbs.js';

/**
 * Searches by a name's prefix answer the same on both read DBs, in id order, whichever way the embedded read
 * DB takes to them (query-side/user-reads.ts, `sqliteNameSearchSql`): through the folded name's index when
 * few names match, in id order when many do, and through the index after all when many match but crowd
 * together after the first rows. The expected answer is worked out here from the rows with `foldName`;
 * on MariaDB that checks the fold against the read model's collation for the letters used.
 */

const id = (i: number) => `${i.toString(16).padStart(8, '0')}-0000-7000-8000-000000000000`;
const statuses = ['registered', 'validated', 'deactivated'] as const;

interface Row {
  ID_USER_DATA: string;
  NAME: string;
  EMAIL: string;
  STATUS: string;
}

function fixture(): Row[] {
  const rows: Row[] = [];
  const add = (i: number, name: string, status: string = statuses[i % 3]!) =>
    rows.push({ ID_USER_DATA: id(i), NAME: name, EMAIL: name === '' ? '' : `u${i}@example.org`, STATUS: status });
  // Many matches spread over the ids: in id order, a page fills within the first rows.
  for (let i = 0; i < 6000; i++) add(2 * i, `Ann ${i}`);
  // Few matches among them, with letters beyond ASCII.
  for (let i = 0; i < 25; i++) add(2 * i + 1, `${i % 2 ? 'Émile' : 'EMILY'} ${i}`);
  for (let i = 25; i < 30; i++) add(2 * i + 1, `ΣΩΚΡΆΤΗΣ ${i}`);
  for (let i = 30; i < 33; i++) add(2 * i + 1, '', 'forgotten');
  // A forgotten row whose name the projector has not yet erased, among the rows read in id order: never listed.
  add(2 * 200 + 1, 'Ann forgotten', 'forgotten');
  // Letters of their own in MariaDB's collation: compared as themselves, not as o, l or ss.
  for (const [i, name] of ['Ørsted', 'Łódź', 'Straße', 'Oskar', 'Lodz', 'Strasser', 'Йосиф', 'Иван', 'Ёлка', 'Елена'].entries()) {
    add(2 * (100 + i) + 1, `${name} ${i}`);
  }
  // Many matches crowded after every other row, but for three among the first: in id order, a page of more than
  // three does not fill within the rows it reads, and what it found is not the whole page.
  for (let i = 0; i < 5000; i++) add(20000 + i, `Zed ${i}`);
  for (let i = 0; i < 3; i++) add(2 * (40 + i) + 1, `Zed early ${i}`);
  return rows;
}

const prefixes = [
  ...['ann', 'ANN 1', 'Ann 59', 'zed', 'zed 4', 'ZED 4999', 'émile', 'EMILE', 'emi', 'e', 'é', 'σωκρα', 'Σ', 'q', 'a', 'z', 'Ann_', 'Ann %'],
  ...['o', 'ø', 'lodz', 'ŁÓDŹ', 'strass', 'STRAß', 'straße', 'и', 'Й', 'ё', 'е', '\u0301'],
];
const afters = [undefined, id(6000), id(24990)];

forEachReadDb(t, async (t, db, kind) => {
  const rows = fixture();
  const dates = { DATE_REGISTER: '2026-01-01 00:00:00.000', DATE_UPDATED: '2026-01-01 00:00:00.000', VERSION: 1 };
  await db.batchInsert('USER_DATA', rows.map((row) => ({ ...row, ...dates })), 400);
  t.teardown(() => db('USER_DATA').whereIn('ID_USER_DATA', rows.map((row) => row.ID_USER_DATA)).delete());
  const routes = new Map<string, number>();
  let lastRoute: string | undefined;
  const reads = openUserReads(db, {
    timeoutMs: 5000,
    onNameSearch: (route) => {
      lastRoute = route;
      routes.set(route, (routes.get(route) ?? 0) + 1);
    },
  });
  t.teardown(() => reads.close());

  const expected = (filter: UserRowFilter & { name: string }) =>
    rows
      // A prefix that folds to nothing (a combining mark alone) matches no name, as MariaDB's LIKE matches none.
      .filter((row) => row.STATUS !== 'forgotten' && foldName(filter.name) !== '' && foldName(row.NAME).startsWith(foldName(filter.name)))
      .filter((row) => filter.status === undefined || row.STATUS === filter.status)
      .filter((row) => filter.afterId === undefined || row.ID_USER_DATA > filter.afterId)
      .map((row) => row.ID_USER_DATA)
      .sort()
      .slice(0, filter.limit);

  await t.test('the fixture takes each way: many spread, many crowded after the rows read in id order, few', async (t) => {
    const count = (prefix: string) => rows.filter((row) => foldName(row.NAME).startsWith(prefix)).length;
    t.ok(count('ann') >= indexRouteMostMatches, 'Ann: enough matches to be read in id order');
    t.ok(count('zed') >= indexRouteMostMatches, 'Zed: as many');
    t.ok(rows.filter((row) => row.ID_USER_DATA < id(20000)).length > idOrderMostRows, 'Zed: mostly after more rows than are read in id order');
    t.equal(rows.filter((row) => row.ID_USER_DATA < id(20000) && row.NAME.startsWith('Zed')).length, 3, 'Zed: three before them');
    t.ok(count('emi') < indexRouteMostMatches, 'Émile: few');
  });

  await t.test('every prefix, limit, status and cursor answers the matching rows in id order', async (t) => {
    let checked = 0;
    for (const name of prefixes) {
      for (const limit of [1, 21, 101]) {
        for (const status of [undefined, 'validated'] as const) {
          for (const afterId of afters) {
            const filter = { name, limit, ...(status ? { status } : {}), ...(afterId ? { afterId } : {}) };
            const got = (await reads.list(filter)).map((row) => row.ID_USER_DATA);
            t.same(got, expected(filter), JSON.stringify(filter));
            checked++;
          }
        }
      }
    }
    t.equal(checked, prefixes.length * 3 * 2 * afters.length);
    if (kind === 'sqlite') {
      t.same(
        [...routes.keys()].sort(),
        ['in id order', 'in id order, then through the index', 'no match', 'through the index'],
        `each way was taken: ${JSON.stringify(Object.fromEntries(routes))}`,
      );
    }
  });

  await t.test('on the embedded read DB, each search takes the way its matches call for', async (t) => {
    if (kind !== 'sqlite') {
      t.pass('MariaDB has one way: its optimizer chooses');
      return;
    }
    const route = async (filter: UserRowFilter) => {
      lastRoute = undefined;
      await reads.list(filter);
      return lastRoute;
    };
    t.equal(await route({ name: 'qq', limit: 21 }), 'no match');
    t.equal(await route({ name: 'emi', limit: 21 }), 'through the index', 'few matches');
    t.equal(await route({ name: 'ann', limit: 21 }), 'in id order', 'many, spread');
    t.equal(await route({ name: 'ann', status: 'validated', limit: 21 }), 'in id order', 'many, spread, of a status: through its index');
    t.equal(await route({ name: 'zed', limit: 21 }), 'in id order, then through the index', 'many, crowded after the rows read');
    t.equal(await route({ name: 'zed', afterId: id(24990), limit: 21 }), 'in id order', 'many, and the rows read were the last: a short page is whole');
  });

  await t.test('case and accents aside, a prefix is a prefix', async (t) => {
    const names = async (name: string) => (await reads.list({ name, limit: 101 })).map((row) => row.NAME);
    t.same(await names('emile 1'), ['Émile 1', 'Émile 11', 'Émile 13', 'Émile 15', 'Émile 17', 'Émile 19']);
    t.same(await names('ÉMILY 2'), ['EMILY 2', 'EMILY 20', 'EMILY 22', 'EMILY 24']);
    t.same(await names('σωκράτης 2'), ['ΣΩΚΡΆΤΗΣ 25', 'ΣΩΚΡΆΤΗΣ 26', 'ΣΩΚΡΆΤΗΣ 27', 'ΣΩΚΡΆΤΗΣ 28', 'ΣΩΚΡΆΤΗΣ 29']);
    t.same(await names('mile'), [], 'not a substring');
    t.same(await names('Ann%'), [], 'LIKE metacharacters are plain text');
    t.same(await names('ø'), ['Ørsted 0']);
    t.same(await names('o'), ['Oskar 3'], 'ø is a letter of its own');
    t.same(await names('straß'), ['Straße 2', 'Strasser 5'], 'ß is s, as MariaDB takes it');
    t.same(await names('strass'), ['Strasser 5'], 'and not ss: LIKE compares letter by letter');
    t.same(await names('и'), ['Иван 7'], 'й is a letter of its own');
    t.same(await names('й'), ['Йосиф 6']);
    t.same(await names('е'), ['Ёлка 8', 'Елена 9'], 'ё is е');
    t.same(await names('\u0301'), [], 'a combining mark alone matches no name');
  });
});
