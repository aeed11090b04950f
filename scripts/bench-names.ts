import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openUserReads, type UserRowFilter } from '../query-side/user-reads.js';
import { openReadDb } from '../shared/read-db.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { benchExit, onInterrupt } from './bench/interrupt.js';
import { median } from './bench/stack.js';

/**
 * What a search by a name's prefix costs the read API on the embedded read DB
 * (`GET /users?name=`: `openUserReads(...).list`, the same call, without HTTP),
 * with a lookup by id in the same run for scale (which waits a turn of the event loop for
 * its batch). Seeds BENCH_USERS (500,000) users into a new read DB, twelve first names
 * taking turns (each a twelfth of the rows) with a number after them, all registered,
 * and times each search BENCH_ROUNDS (7) times; prints each one's median. A search runs on the read
 * API's event loop (better-sqlite3 is synchronous): every other request of that
 * process waits for it. Asserts nothing. To compare two versions of the code, run it
 * from each checkout in turn.
 */
const users = Number(process.env.BENCH_USERS ?? 500_000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
const firstNames = ['Ada', 'Émile', 'Grace', 'Alan', 'Barbara', 'Edsger', 'Donald', 'Ken', 'Dennis', 'Linus', 'Margaret', 'Frances'];
const id = (i: number) => `${i.toString(16).padStart(8, '0')}-0000-7000-8000-000000000000`;

const searches: Array<[label: string, filter: Omit<UserRowFilter, 'limit'> & { limit?: number }]> = [
  ['a prefix no one has (zzq)', { name: 'zzq' }],
  ['a rare one with a letter beyond ASCII (Émile zz)', { name: 'Émile zz' }],
  ['a twelfth of the users (Ada)', { name: 'Ada' }],
  ['without its accent (emile)', { name: 'emile' }],
  ['a sixth of them, a page of 101 (a)', { name: 'a', limit: 101 }],
  ['a twelfth, no status matching (ada, validated)', { name: 'ada', status: 'validated' }],
  ['a sixth, from the middle (d, after a cursor)', { name: 'd', afterId: id(Math.floor(users / 2)) }],
];

/** The fold the read DB's index needs to write rows (absent before the folded name's index: run from an older checkout, this seeds without it). */
const nameSearch = (await import('../shared/read-model/name-search.js').catch(() => undefined)) as
  | { registerNameFolding(db: Database.Database): void }
  | undefined;

function seed(file: string) {
  const db = new Database(file);
  nameSearch?.registerNameFolding(db);
  db.pragma('synchronous = OFF');
  const insert = db.prepare(
    "INSERT INTO USER_DATA VALUES (?, ?, ?, 'registered', '2026-01-01 00:00:00.000', NULL, NULL, '2026-01-01 00:00:00.000', 1)",
  );
  db.transaction(() => {
    for (let i = 0; i < users; i++) insert.run(id(i), `${firstNames[i % firstNames.length]} ${((i * 7919) % 100_000).toString(36)}`, `u${i}@example.org`);
  })();
  db.close();
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'users-bench-names-'));
  onInterrupt(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'queries.sqlite');
  try {
    const migrating = await openReadDb({ client: 'sqlite', file });
    await migrateReadDb(migrating);
    await migrating.destroy();
    const seeding = Date.now();
    seed(file);
    console.log(`seeded ${users.toLocaleString('en')} users in ${((Date.now() - seeding) / 1000).toFixed(1)} s (BENCH_USERS)`);
    const db = await openReadDb({ client: 'sqlite', file }, { create: false });
    const reads = openUserReads(db, { timeoutMs: 5000 });
    try {
      const time = async (run: () => Promise<unknown>) => {
        const ms: number[] = [];
        let rows = 0;
        for (let round = 0; round < rounds; round++) {
          const started = process.hrtime.bigint();
          const answer = await run();
          ms.push(Number(process.hrtime.bigint() - started) / 1e6);
          rows = Array.isArray(answer) ? answer.length : answer ? 1 : 0;
        }
        return { ms: median(ms), rows };
      };
      const lookup = await time(() => reads.byId(id(Math.floor(users / 3))));
      console.log(`lookup by id: ${lookup.ms.toFixed(3)} ms (median of ${rounds})`);
      for (const [label, filter] of searches) {
        const { ms, rows } = await time(() => reads.list({ limit: 20, ...filter }));
        console.log(`${label}: ${ms.toFixed(3)} ms, ${rows} rows`);
      }
    } finally {
      await reads.close();
      await db.destroy();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => benchExit(1, error));
