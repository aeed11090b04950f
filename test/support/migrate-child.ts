import { openReadDb } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';

// A process that migrates the embedded read DB named by its argument, as a role does at start
// (test/shared/migrations.int.test.ts): exits 0 when it has, 1 with the error on stderr when not.
const db = await openReadDb({ client: 'sqlite', file: process.argv[2]! });
try {
  await migrateReadDb(db);
} catch (error) {
  process.stderr.write(`${String(error)}\n`);
  process.exitCode = 1;
} finally {
  await db.destroy();
}
