import type { Knex } from 'knex';
import { ServiceError } from '../shared/errors.js';
import { readDbDialect } from '../shared/read-model/dialect.js';

/**
 * PROJECTION_CONTROL: one row per projection through which a rebuild coordinates
 * with the live projector (a pause with an expiry) and with other rebuilds (a
 * lock with an owner and a heartbeat). Times come from the database's clock, so
 * processes on different hosts agree on what has expired.
 */
export const controlTable = 'PROJECTION_CONTROL';

const now = (db: Knex): Knex.Raw => readDbDialect(db).now(db);
const nowPlus = (db: Knex, ms: number): Knex.Raw => readDbDialect(db).nowPlus(db, ms);
const ageMs = (db: Knex, column: string): Knex.Raw => readDbDialect(db).ageMs(db, column);

/** The live projector met a rebuild's pause: retriable, the same batch is tried again later. */
export class ProjectionPausedError extends ServiceError {
  override readonly name = 'ProjectionPausedError';
  constructor(readonly pausedBy: string) {
    super('PROJECTION_PAUSED', `projection paused by rebuild ${pausedBy} while it swaps the table in`, true);
  }
}

/** Another rebuild holds the lock and its heartbeat is fresh. */
export class RebuildLockedError extends ServiceError {
  override readonly name = 'RebuildLockedError';
  constructor(
    readonly owner: string,
    readonly heartbeatAgeMs: number,
    readonly staleAfterMs: number,
  ) {
    super(
      'REBUILD_LOCKED',
      `another rebuild is running (owner ${owner}, last heartbeat ${(heartbeatAgeMs / 1000).toFixed(1)} s ago); ` +
        `only one may run at a time. If it was killed, its lock goes stale ${(staleAfterMs / 1000).toFixed(0)} s after its last heartbeat.`,
    );
  }
}

/**
 * Called first in every live batch's transaction. On MariaDB the shared lock on
 * the control row makes a rebuild's pause (an UPDATE of that row) wait for the
 * batch in flight, and a batch that starts later sees the pause. On SQLite a
 * write to the row takes the database's write lock first, which serialises the
 * same way (and keeps a deferred transaction from failing with BUSY_SNAPSHOT
 * when another connection commits between its first read and its first write).
 */
export async function assertNotPaused(trx: Knex.Transaction, projection: string): Promise<void> {
  const dialect = readDbDialect(trx);
  const row = trx(controlTable).where({ PROJECTION: projection });
  if (!dialect.rowLocks) await row.clone().update({ PROJECTION: projection });
  const query = row.first<{ PAUSED_BY: string | null; ACTIVE: number | string } | undefined>(
    'PAUSED_BY',
    trx.raw('CASE WHEN PAUSED_UNTIL > ? THEN 1 ELSE 0 END AS ACTIVE', [now(trx)]),
  );
  throwIfPaused(await dialect.lockForShare(query));
}

/** The control row as the pause checks read it: throws ProjectionPausedError while a rebuild's pause holds. */
export function throwIfPaused(control: { PAUSED_BY: string | null; ACTIVE: number | string } | undefined): void {
  if (control?.PAUSED_BY && Number(control.ACTIVE) === 1) throw new ProjectionPausedError(control.PAUSED_BY);
}

/** This run's lock is another run's now: its heartbeat went stale and that run took over. */
export class RebuildLockLostError extends ServiceError {
  override readonly name = 'RebuildLockLostError';
  constructor() {
    super('REBUILD_LOCK_LOST', 'this rebuild lost its lock (its heartbeat went stale and another run took over); stopping without swapping');
  }
}

/** A rebuild is running: the quarantine is left alone until it has swapped its table in. */
export class RebuildRunningError extends ServiceError {
  override readonly name = 'RebuildRunningError';
  constructor(readonly owner: string) {
    super('REBUILD_LOCKED', `a rebuild is running (owner ${owner}); try again when it has finished`, true);
  }
}

/**
 * For changes made beside the live projector (an operator releasing parked
 * events): like a live batch it waits for and respects a pause, and it refuses
 * while a rebuild is running, because the rebuild folds the log with the
 * quarantine as it found it at its start. Holding the control row also makes a
 * rebuild that starts meanwhile wait for this transaction.
 */
const abandonedRebuildMs = 60_000;

export async function assertNoRebuild(trx: Knex.Transaction, projection: string): Promise<void> {
  await assertNotPaused(trx, projection);
  const control = await trx(controlTable)
    .where({ PROJECTION: projection })
    .first<{ REBUILD_OWNER: string | null; AGE: number | string | null } | undefined>(
      'REBUILD_OWNER',
      ageMs(trx, 'REBUILD_HEARTBEAT').wrap('(', ') AS AGE'),
    );
  // A lock whose heartbeat stopped a minute ago belongs to a run that was killed.
  if (control?.REBUILD_OWNER && Number(control.AGE ?? 0) < abandonedRebuildMs) throw new RebuildRunningError(control.REBUILD_OWNER);
}

export interface LockTaken {
  /** The owner of a stale lock that was taken over: a previous run that was interrupted. */
  staleOwner?: string;
  staleAgeMs?: number;
}

/** The rebuild's side of the control row, for one projection and one owner. */
export function projectionControl(deps: { db: Knex; projection: string; owner: string }) {
  const { db, projection, owner } = deps;
  const row = () => db(controlTable).where({ PROJECTION: projection });

  return {
    /**
     * Takes the rebuild lock when it is free or stale: its heartbeat older than the
     * holder's own `staleAfterMs` (recorded when it took the lock; this run's, for a
     * lock taken before that was recorded). Taking a stale lock also lifts any pause
     * it left behind.
     */
    async acquire(staleAfterMs: number): Promise<LockTaken> {
      await db(controlTable).insert({ PROJECTION: projection }).onConflict('PROJECTION').ignore();
      const holderNow = () =>
        row().first<{ REBUILD_OWNER: string | null; AGE: number | string | null; REBUILD_STALE_MS: number | string | null }>(
          'REBUILD_OWNER',
          'REBUILD_STALE_MS',
          ageMs(db, 'REBUILD_HEARTBEAT').wrap('(', ') AS AGE'),
        );
      const before = await holderNow();
      const taken = await row()
        .where((q) => {
          void q
            .whereNull('REBUILD_OWNER')
            .orWhereNull('REBUILD_HEARTBEAT')
            .orWhere(db.raw('(?) > COALESCE(REBUILD_STALE_MS, ?)', [ageMs(db, 'REBUILD_HEARTBEAT'), staleAfterMs]));
        })
        .update({
          REBUILD_OWNER: owner,
          REBUILD_STARTED: now(db),
          REBUILD_HEARTBEAT: now(db),
          REBUILD_STALE_MS: staleAfterMs,
          PAUSED_BY: null,
          PAUSED_UNTIL: null,
        });
      if (taken === 1) {
        return before?.REBUILD_OWNER
          ? { staleOwner: before.REBUILD_OWNER, staleAgeMs: Number(before.AGE ?? 0) }
          : {};
      }
      const holder = await holderNow();
      throw new RebuildLockedError(holder?.REBUILD_OWNER ?? 'unknown', Number(holder?.AGE ?? 0), Number(holder?.REBUILD_STALE_MS ?? staleAfterMs));
    },

    /** Refreshes the heartbeat; false when the lock is no longer ours (another run took it over). */
    async heartbeat(): Promise<boolean> {
      return (await row().where({ REBUILD_OWNER: owner }).update({ REBUILD_HEARTBEAT: now(db) })) === 1;
    },

    /**
     * Inside a transaction that writes for this run (into its shadow table), after its
     * writes: throws RebuildLockLostError, so they roll back, unless the lock is still
     * ours. Another run that took over owns the shadow table now (it dropped this run's
     * and made its own), and what this run wrote there would be mixed into it. Checked
     * last, the check holds until the commit: SQLite's write lock is held by then, and on
     * MariaDB the shared lock on the control row keeps a takeover waiting until the
     * transaction ends.
     */
    async assertHeld(trx: Knex): Promise<void> {
      const query = trx(controlTable).where({ PROJECTION: projection }).first<{ REBUILD_OWNER: string | null } | undefined>('REBUILD_OWNER');
      const control = await readDbDialect(trx).lockForShare(query);
      if (control?.REBUILD_OWNER !== owner) throw new RebuildLockLostError();
    },

    async release(): Promise<void> {
      await row()
        .where({ REBUILD_OWNER: owner })
        .update({ REBUILD_OWNER: null, REBUILD_STARTED: null, REBUILD_HEARTBEAT: null, REBUILD_STALE_MS: null });
    },

    /**
     * Pauses the live projector for `ms`. On MariaDB the UPDATE waits for the
     * live batch in flight (it holds a shared lock on the row) to commit.
     */
    async pause(ms: number): Promise<boolean> {
      const updated = await row().where({ REBUILD_OWNER: owner }).update({ PAUSED_BY: owner, PAUSED_UNTIL: nowPlus(db, ms) });
      return updated === 1;
    },

    /** Extends our pause; false when it expired or is not ours any more (then the live projector may have moved on). */
    async extendPause(ms: number, trx: Knex = db): Promise<boolean> {
      const updated = await trx(controlTable)
        .where({ PROJECTION: projection, REBUILD_OWNER: owner, PAUSED_BY: owner })
        .where('PAUSED_UNTIL', '>', now(trx))
        .update({ PAUSED_UNTIL: nowPlus(trx, ms) });
      return updated === 1;
    },

    async clearPause(trx: Knex = db): Promise<void> {
      await trx(controlTable).where({ PROJECTION: projection, PAUSED_BY: owner }).update({ PAUSED_BY: null, PAUSED_UNTIL: null });
    },
  };
}

export type ProjectionControl = ReturnType<typeof projectionControl>;
