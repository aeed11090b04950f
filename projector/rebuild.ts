import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { ServiceError } from '../shared/errors.js';
import type { EventStore, RecordedEvent } from '../shared/event-store/port.js';
import { openedEventStore } from '../shared/personal-data/opened-event-store.js';
import type { Vault } from '../shared/personal-data/vault.js';
import { eraseFreedPages } from '../shared/read-db.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import { userStreamPrefix } from '../shared/user-events.js';
import { projectionName } from '../shared/read-model/user-row.js';
import { readCheckpoints } from '../shared/read-model/checkpoints.js';
import { compareUserTables, type TableDifferences } from './compare-tables.js';
import { projectionControl, RebuildLockLostError, type LockTaken, type ProjectionControl } from './projection-control.js';
import { quarantinedEvents } from '../shared/read-model/dead-letters.js';
import { rebuildRows, type Quarantined, type RebuildRows } from './rebuild-rows.js';
import { liveLogPosition, shadowUserData, SwapUnfinishedError, type ShadowUserData } from './shadow-table.js';

export { RebuildLockLostError } from './projection-control.js';

export type RebuildPhase = 'replaying' | 'catching up (paused)' | 'verifying (paused)' | 'swapping';

export interface RebuildProgress {
  phase: RebuildPhase;
  /** Events read from the log so far. */
  events: number;
  /** Log position of the last event read (none while the log is read stream after stream). */
  position: bigint | undefined;
  /**
   * While the log is read stream after stream: about how many events that read
   * holds (the user streams' share of the log, sampled), for a progress display.
   */
  expected?: number;
}

export interface RebuildOptions {
  /** Compare the rebuilt table with the live one (during the pause) and report differences. */
  verify?: boolean;
  /** Build (and verify) the shadow, then drop it instead of swapping it in. */
  dryRun?: boolean;
  /** Events per read of the log. */
  batchSize?: number;
  /** Rows held in memory; past that, changed ones are flushed to the shadow and memory is cleared. */
  maxRowsInMemory?: number;
  /**
   * Swap in a table where users whose keys are missing from the key store, though their
   * logs hold no UserForgotten, are forgotten (see `KeysMissingError`): only when those
   * keys are lost for good.
   */
  acceptMissingKeys?: boolean;
  /** Aborting before the swap drops the shadow and leaves the live table as it was. */
  signal?: AbortSignal;
  onProgress?: (progress: RebuildProgress) => void;
}

export interface Verification extends TableDifferences {
  /** The live projector's global-log checkpoint at the comparison, if it reads the log (fed by Kafka, it is compared at the head). */
  livePosition?: string;
  /** Log position the shadow had reached at the comparison. */
  shadowPosition?: string;
  /** The shadow was past the live checkpoint, so rows changed in between differ legitimately. */
  shadowAhead: boolean;
}

export interface RebuildResult {
  events: number;
  rows: number;
  /** Log position the rebuilt table reflects. */
  position?: string;
  swapped: boolean;
  verification?: Verification;
  durationMs: number;
  /** How long the live projector was held. */
  pausedMs: number;
  /** Where the time went: waiting for the log, folding it (with any wait for background writes), the final writes. */
  timings: { readMs: number; foldMs: number; writeMs: number };
  /** Rows written to the shadow; more than `rows` when some were written before they changed again. */
  rowsWritten: number;
  /** An earlier, interrupted run whose lock and leftovers this run took over. */
  tookOverFrom?: string;
  /** Users rebuilt as forgotten because their keys are missing, though their logs hold no UserForgotten. */
  usersWithoutKeys: number;
}

/**
 * The key store lacks the keys of users nobody forgot. A forget appends UserForgotten
 * before it destroys a key, so a key missing without one in its stream is a key store
 * that is not the service's (a wrong KEY_STORE_URL or DATA_DIR) or one restored from
 * an older backup. Swapped in, the rebuilt table would make those users forgotten (410
 * on every read) and erase their parked events: the rebuild refuses instead.
 */
export class KeysMissingError extends Error {
  override readonly name = 'KeysMissingError';
  constructor(
    readonly users: number,
    readonly example: string,
  ) {
    super(
      `${users} user${users === 1 ? '' : 's'} would be rebuilt as forgotten though nobody forgot them (e.g. ${example}): ` +
        'the key store lacks their keys. Is it the service\'s own (KEY_STORE_URL, DATA_DIR), and not an older backup? ' +
        'USER_DATA is left as it is; if those keys are lost for good, --accept-missing-keys rebuilds them as forgotten',
    );
  }
}

/**
 * The vault, noting the streams whose events it read as forgotten for want of a key
 * (stored as another type, opened as UserForgotten) and letting go of each stream once
 * its own UserForgotten is read, which comes after them in the log.
 */
function noticingMissingKeys(vault: Pick<Vault, 'open'>): { vault: Pick<Vault, 'open'>; unforgotten: Set<string> } {
  const unforgotten = new Set<string>();
  return {
    unforgotten,
    vault: {
      async open(events, options) {
        const opened = await vault.open(events, options);
        for (const [i, stored] of events.entries()) {
          if (stored.type === 'UserForgotten') unforgotten.delete(stored.streamId);
          else if (opened[i]!.type === 'UserForgotten') unforgotten.add(stored.streamId);
        }
        return opened;
      },
    },
  };
}

export class RebuildAbortedError extends ServiceError {
  override readonly name = 'RebuildAbortedError';
  constructor() {
    super('REBUILD_ABORTED', 'rebuild interrupted; the live table was left as it was and the shadow table dropped');
  }
}

/** The pause ran out before the swap: pause again and catch up again (three times, then the run fails with this). */
class PauseLost extends Error {
  override readonly name = 'PauseLost';
  constructor() {
    super('the live projector\'s pause ran out before the swap three times (REBUILD_PAUSE_MS too short for this read DB?); nothing was swapped');
  }
}

const toPosition = (value: string | undefined): bigint | undefined => (value === undefined ? undefined : BigInt(value));

/**
 * About how many events of the user streams the log holds up to `until`: their
 * share of a few short pages spread over it, times `until` (the stores that read
 * stream after stream number their events consecutively).
 */
async function sampledUserEvents(store: EventStore, until: bigint): Promise<number | undefined> {
  const samples = 8n;
  let seen = 0;
  let ofUsers = 0;
  for (let i = 0n; i < samples; i++) {
    for (const e of await store.readAll({ after: (until * i) / samples, maxCount: 250 })) {
      if (e.position > until) break;
      seen += 1;
      if (e.streamId.startsWith(userStreamPrefix)) ofUsers += 1;
    }
  }
  return seen === 0 ? undefined : Math.round((Number(until) * ofUsers) / seen);
}


/**
 * The log in order of position, page after page: the next page is read while the
 * caller folds this one. Events put back (`unread`) come first.
 */
export function logPager(store: EventStore, pageSize: number, timed: <T>(work: () => Promise<T>) => Promise<T> = (work) => work()) {
  let pending: RecordedEvent[] = [];
  // The page after the last one read, already on its way.
  let ahead: { after: bigint; page: Promise<RecordedEvent[]> } | undefined;
  return {
    /** The page after `after` (the log's start when undefined); `atHead` when it is the last there is. */
    async next(after: bigint | undefined): Promise<{ page: RecordedEvent[]; atHead: boolean }> {
      if (pending.length > 0) {
        const page = pending;
        pending = [];
        return { page, atHead: false };
      }
      const readFresh = () => store.readAll({ ...(after === undefined ? {} : { after }), maxCount: pageSize });
      const prefetched = ahead !== undefined && ahead.after === after ? ahead.page : undefined;
      ahead = undefined;
      let page = await timed(() => prefetched ?? readFresh());
      // A full page read ahead is as good as a fresh one: the log only grows. A short one may
      // be stale at the head (read before the pause, say), so the head is judged by a fresh read.
      if (prefetched !== undefined && page.length < pageSize) page = await timed(readFresh);
      const atHead = page.length < pageSize;
      // Read the next page while this one is folded (I/O, or a store reading on another thread).
      if (!atHead) {
        const next = { after: page[page.length - 1]!.position, page: store.readAll({ after: page[page.length - 1]!.position, maxCount: pageSize }) };
        // Awaited when used; dropped unread (the run stopped) it must not count as unhandled.
        next.page.catch(() => {});
        ahead = next;
      }
      return { page, atHead };
    },
    /** Events read but not to be folded yet: the next `next` returns them. */
    unread(events: RecordedEvent[]): void {
      pending = events;
    },
  };
}

/** Where a run stands: its phase, how far it read, its pause, its lock. */
interface RunState {
  phase: RebuildPhase;
  /** Log position of the last event folded (none while the log is read stream after stream). */
  position: bigint | undefined;
  /** Events read so far. */
  events: number;
  /** While the log is read stream after stream: about how many events that read holds. */
  expected: number | undefined;
  /** While this run holds the live projector paused: since when (performance.now()). */
  pausedSince: number | undefined;
  /** How long the live projector was held, pauses that ended so far. */
  pausedMs: number;
  /** The lock is another run's now (found by the heartbeat, a refused pause, or the look at the end): nothing of the run's may be touched. */
  lockLost: boolean;
  swapped: boolean;
}

const runState = (): RunState => ({
  phase: 'replaying',
  position: undefined,
  events: 0,
  expected: undefined,
  pausedSince: undefined,
  pausedMs: 0,
  lockLost: false,
  swapped: false,
});

/** The pause is over (cleared, ran out, or ended by the swap): its time is counted. */
function pauseEnded(state: RunState): void {
  if (state.pausedSince === undefined) return;
  state.pausedMs += performance.now() - state.pausedSince;
  state.pausedSince = undefined;
}

/** What a replay works with: the run's rows, state and pager, and its between-pages checks. */
interface Replaying {
  store: EventStore;
  rows: RebuildRows;
  state: RunState;
  pager: LogPager;
  batchSize: number;
  /** Between pages: stop when asked or when the lock is gone; keep the pause alive. */
  checkpoint(): Promise<void>;
  timed<T>(key: 'readMs' | 'foldMs' | 'writeMs', work: () => Promise<T>): Promise<T>;
  report(): void;
  betweenPages(): Promise<void>;
  /** Estimate the events of a stream-ordered read (for a progress display). */
  sample: boolean;
}

/** Folds the log from where it got to, up to `until` (inclusive) or the head; returns how many events it read. */
async function replayInOrder(run: Replaying, until?: bigint): Promise<number> {
  const { state, pager, rows } = run;
  let count = 0;
  for (;;) {
    await run.checkpoint();
    if (until !== undefined && state.position !== undefined && state.position >= until) return count;
    const next = await pager.next(state.position);
    let page = next.page;
    let reached = false;
    if (until !== undefined) {
      const cut = page.findIndex((e) => e.position > until);
      if (cut >= 0) {
        pager.unread(page.slice(cut));
        page = page.slice(0, cut);
        reached = true;
      }
    }
    if (page.length > 0) state.position = page[page.length - 1]!.position;
    await run.timed('foldMs', () => rows.fold(page, state.position?.toString()));
    count += page.length;
    state.events += page.length;
    run.report();
    if (reached || next.atHead) return count;
    await run.betweenPages();
  }
}

/**
 * Folds the user streams as the log stood at `until`, stream after stream, where
 * the store can read them so: every row is complete when written, none is held.
 */
async function replayStreamAfterStream(run: Replaying, until: bigint): Promise<void> {
  const { store, state, rows } = run;
  const pages = store.readAllByStream!({ streamPrefix: userStreamPrefix, until, pageSize: run.batchSize })[Symbol.asyncIterator]();
  // Only the user streams are read: the log's head would overstate what is to come.
  if (run.sample) state.expected = await sampledUserEvents(store, until);
  try {
    for (;;) {
      await run.checkpoint();
      const next = await run.timed('readMs', () => pages.next());
      if (next.done) break;
      const page = next.value;
      await run.timed('foldMs', () => rows.foldByStream(page));
      state.events += page.length;
      run.report();
      await run.betweenPages();
    }
  } finally {
    // Stops the store's reading ahead when the run stops early.
    await pages.return?.();
  }
  state.position = until;
  state.expected = undefined;
  await run.timed('writeMs', () => rows.endByStream(until.toString()));
}

/** Refreshes the lock's heartbeat every `heartbeatMs`; marks the run's lock lost when another run took it over. */
function keepLockAlive(control: ProjectionControl, heartbeatMs: number, logger: Logger, state: RunState): ReturnType<typeof setInterval> {
  return setInterval(() => {
    control.heartbeat().then(
      (ours) => void (ours || (state.lockLost = true)),
      (error: unknown) => logger.warn({ err: error }, 'rebuild heartbeat failed; will try again'),
    );
  }, heartbeatMs);
}

type LogPager = ReturnType<typeof logPager>;

/** What a rebuild is made with (see `userDataRebuild`). */
interface RebuildSettings {
  /** The event store, its sealed personal fields opened. */
  store: EventStore;
  db: Knex;
  logger: Logger;
  owner: string;
  heartbeatMs: number;
  pauseMs: number;
  pageDelayMs: number;
}

/** One run's parts: its replay, the control row and the shadow, its settings and options. */
interface Run extends Replaying {
  db: Knex;
  logger: Logger;
  owner: string;
  control: ProjectionControl;
  shadow: ShadowUserData;
  /** Filled once the lock is taken: from then on operators cannot change the quarantine. */
  quarantine: Quarantined;
  timings: RebuildResult['timings'];
  heartbeatMs: number;
  pauseMs: number;
  options: RebuildOptions;
  /** Streams read as forgotten for want of a key, whose own UserForgotten has not been read. */
  unforgotten: ReadonlySet<string>;
}

/** The lock this run holds, and the heartbeat that keeps it. */
interface HeldLock {
  taken: LockTaken;
  heartbeat: ReturnType<typeof setInterval>;
}

/** A run's parts, before it takes the lock. */
function runParts(settings: RebuildSettings, options: RebuildOptions, unforgotten: ReadonlySet<string>): Run {
  const { store, db, logger, owner, heartbeatMs, pauseMs, pageDelayMs } = settings;
  const batchSize = options.batchSize ?? 1000;
  const maxRows = options.maxRowsInMemory ?? 200_000;
  const { signal } = options;
  const control = projectionControl({ db, projection: projectionName, owner });
  // Its writes commit only while the lock is ours.
  const shadow = shadowUserData(db, control);
  const quarantine: Quarantined = { blocked: new Map(), skipped: new Set() };
  const rows = rebuildRows({
    shadow,
    maxRows,
    quarantine,
    // Overlap the database's work with the fold when the database is another process.
    ...(readDbDialect(db).separateProcess ? { writeBehind: { hot: Math.floor(maxRows / 4), batchRows: Math.max(100, Math.floor(maxRows / 20)) } } : {}),
  });
  const state = runState();
  const timings = { readMs: 0, foldMs: 0, writeMs: 0 };
  const timed = async <T>(key: keyof typeof timings, work: () => Promise<T>): Promise<T> => {
    const start = performance.now();
    try {
      return await work();
    } finally {
      timings[key] += performance.now() - start;
    }
  };
  const report = () => {
    const { phase, events, position, expected } = state;
    options.onProgress?.({ phase, events, position, ...(expected === undefined ? {} : { expected }) });
  };
  /** Between pages: stop when asked or when the lock is gone; keep our pause alive. */
  const checkpoint = async (): Promise<void> => {
    if (signal?.aborted) throw new RebuildAbortedError();
    if (state.lockLost) throw new RebuildLockLostError();
    if (state.pausedSince !== undefined && !(await control.extendPause(pauseMs))) throw new PauseLost();
  };
  /**
   * The configured sleep between reads of the log, or at least one turn of the event
   * loop: a synchronous store never lets it turn, and background writes need it to.
   */
  const betweenPages = async () => {
    if (pageDelayMs > 0) await sleep(pageDelayMs, undefined, signal ? { signal } : {});
    else await new Promise((resolve) => setImmediate(resolve));
  };
  const pager = logPager(store, batchSize, (work) => timed('readMs', work));
  return {
    store, db, logger, owner, heartbeatMs, pauseMs, options, batchSize,
    control, shadow, quarantine, rows, state, timings, pager, unforgotten,
    timed, report, checkpoint, betweenPages, sample: !!options.onProgress,
  };
}

/** Takes the lock (over from a run whose heartbeat went stale) and keeps it alive. */
async function takeLock(run: Run): Promise<HeldLock> {
  const taken = await run.control.acquire(run.heartbeatMs * 3);
  if (taken.staleOwner) {
    run.logger.warn(
      { staleOwner: taken.staleOwner, heartbeatAgeMs: taken.staleAgeMs },
      'an earlier rebuild was interrupted (its lock went stale); cleaning up after it',
    );
  }
  return { taken, heartbeat: keepLockAlive(run.control, run.heartbeatMs, run.logger, run.state) };
}

/** With the lock held: the quarantine as it stands, and an empty shadow in place of what an interrupted run left. */
async function startShadow(run: Run): Promise<void> {
  const { db, logger, shadow, options } = run;
  Object.assign(run.quarantine, await quarantinedEvents(db, projectionName));
  const leftovers = await shadow.dropLeftovers();
  if (leftovers.length > 0) logger.warn({ tables: leftovers }, 'dropped tables an interrupted rebuild left behind');
  await shadow.create();
  logger.info({ owner: run.owner, verify: !!options.verify, dryRun: !!options.dryRun }, 'rebuild started');
}

/** Where the live projector is in the log, when it reads the log (see `liveLogPosition`). */
const livePosition = async (db: Knex) => toPosition(liveLogPosition(await readCheckpoints(db)));

const flush = (run: Run) => run.timed('writeMs', () => run.rows.flush(run.state.position?.toString()));

/**
 * While the live projector runs: to the head (or, when verifying, no further than
 * the live projector, so both can be compared at one position), until one round
 * finds little left to do. The bulk stream after stream when the store can read
 * so, then in order of position from where that stopped.
 */
async function replayBesideLive(run: Run): Promise<void> {
  const { store, db, options } = run;
  const followLive = options.verify === true;
  if (store.readAllByStream) {
    // Any position splits the log exactly (at or before it, stream after stream; after it,
    // in order of position), so a head that is already stale costs time, never rows.
    const until = (followLive ? await livePosition(db) : undefined) ?? (await store.headPosition?.());
    if (until !== undefined) await replayStreamAfterStream(run, until);
  }
  for (;;) {
    const target = followLive ? await livePosition(db) : undefined;
    if ((await replayInOrder(run, target)) < run.batchSize) break;
  }
  // The bulk of the rows is written now, so the pause only covers the last few changes.
  await flush(run);
}

/** Pause, (verify,) catch up with the whole log, swap. Returns the verification, if asked for. */
async function handOver(run: Run): Promise<Verification | undefined> {
  const { db, logger, control, shadow, rows, state, options, pauseMs } = run;
  state.phase = 'catching up (paused)';
  run.report();
  if (!(await control.pause(pauseMs))) {
    // Pausing is refused only to a run that no longer holds the lock (also when a pause ran out and this is the next try).
    state.lockLost = true;
    throw new RebuildLockLostError();
  }
  state.pausedSince = performance.now();
  logger.info('live projector paused');
  let verification: Verification | undefined;
  if (options.verify) {
    // Compare at the live projector's own position, so both tables reflect the same events
    // (at the head when it is fed by Kafka: everything it applied was in the log before the pause).
    const live = await livePosition(db);
    const shadowAhead = live !== undefined && state.position !== undefined && state.position > live;
    await replayInOrder(run, shadowAhead ? undefined : live);
    await flush(run);
    state.phase = 'verifying (paused)';
    run.report();
    const differences = await compareUserTables(db, { expected: shadow.name, actual: projectionName }, { onPage: () => run.checkpoint() });
    verification = {
      ...differences,
      ...(live === undefined ? {} : { livePosition: live.toString() }),
      ...(state.position === undefined ? {} : { shadowPosition: state.position.toString() }),
      shadowAhead,
    };
    logger.info(
      `verified: ${differences.compared} rows compared, ${differences.missing} missing, ${differences.extra} extra, ${differences.different} different`,
    );
  }
  if (options.dryRun) return verification;
  // Everything the live projector applied was in the log before the pause, so
  // catching up with the log now covers it, whatever feeds the projector.
  state.phase = 'catching up (paused)';
  await replayInOrder(run);
  await flush(run);
  if (rows.created === 0 && (await shadow.count(projectionName)) > 0) {
    // Far likelier a wrong EVENTSTORE_URL / DATA_DIR than a log that lost every user.
    throw new Error('the event store holds no users but USER_DATA has rows (a wrong EVENTSTORE_URL or DATA_DIR?); not replacing it with an empty table');
  }
  refuseMissingKeys(run);
  state.phase = 'swapping';
  run.report();
  await run.checkpoint();
  if (!(await shadow.swap(control, state.position?.toString(), pauseMs, rows.parked, [...rows.forgotten]))) throw new PauseLost();
  // From here on a failure must not read as "the live table was left as it was".
  state.swapped = true;
  // The old table's pages (names and emails of forgotten users among them) out of the embedded DB's files.
  if (rows.forgotten.size > 0) await eraseFreedPages(db);
  return verification;
}

/**
 * What a run that failed reports: an interruption (the live table untouched) when it was
 * asked to stop, unless the error itself says what became of the live table:
 * `SwapUnfinishedError` (the rebuilt table is live), `KeysMissingError`, the service's own.
 */
export function failureOfRun(error: unknown, signal: AbortSignal | undefined): unknown {
  if (!signal?.aborted) return error;
  if (error instanceof ServiceError || error instanceof SwapUnfinishedError || error instanceof KeysMissingError) return error;
  return new RebuildAbortedError();
}

/** KeysMissingError when users nobody forgot would be swapped in as forgotten, unless the operator accepts it. */
function refuseMissingKeys(run: Run): void {
  const [example] = run.unforgotten;
  if (example === undefined || run.options.acceptMissingKeys) return;
  throw new KeysMissingError(run.unforgotten.size, example);
}

/** The handover (for a dry run, only when verifying), tried again up to three times when the pause runs out first. */
async function handOverRetrying(run: Run): Promise<Verification | undefined> {
  const { options, state, logger } = run;
  for (let attempt = 1; ; attempt++) {
    try {
      return options.verify || !options.dryRun ? await handOver(run) : undefined;
    } catch (error) {
      if (!(error instanceof PauseLost) || attempt >= 3) throw error;
      pauseEnded(state);
      logger.warn('the pause ran out before the swap; pausing again and catching up again');
    }
  }
}

async function releasePause(run: Run): Promise<void> {
  if (run.state.pausedSince === undefined) return;
  pauseEnded(run.state);
  await run.control.clearPause();
}

/** The live projector goes on: a dry run lifts its pause, a swap has ended it. */
async function resumeLive(run: Run): Promise<void> {
  const { state, logger } = run;
  if (run.options.dryRun) {
    await releasePause(run);
    return;
  }
  pauseEnded(state);
  logger.info({ position: state.position?.toString(), pausedMs: Math.round(state.pausedMs) }, 'rebuilt table swapped in; live projector resumed');
}

function resultOf(run: Run, startedAt: number, lock: HeldLock, verification: Verification | undefined): RebuildResult {
  const { state, rows } = run;
  return {
    events: state.events,
    rows: rows.created,
    rowsWritten: rows.written,
    ...(state.position === undefined ? {} : { position: state.position.toString() }),
    swapped: state.swapped,
    ...(verification ? { verification } : {}),
    durationMs: performance.now() - startedAt,
    pausedMs: state.pausedMs,
    timings: run.timings,
    ...(lock.taken.staleOwner ? { tookOverFrom: lock.taken.staleOwner } : {}),
    usersWithoutKeys: run.unforgotten.size,
  };
}

/**
 * However the run ended: the heartbeat stops and background writes finish; then, only
 * while the lock is ours (after a takeover the shadow belongs to the other run), an
 * unswapped shadow and the pause go, and the lock is released. Whether it is ours is
 * looked at once more first: a run can fail for another reason (say, a write into the
 * shadow the other run had just dropped) before its heartbeat notices the takeover.
 */
async function cleanUpAndUnlock(run: Run, lock: HeldLock): Promise<void> {
  const { logger, state, control } = run;
  clearInterval(lock.heartbeat);
  await run.rows.drain();
  if (state.lockLost) return;
  const ours = await control.heartbeat().catch((error: unknown) => {
    logger.warn({ err: error }, 'could not make sure the rebuild lock is still this run\'s; leaving its shadow table to the next rebuild');
    return undefined;
  });
  if (ours === false) {
    state.lockLost = true;
    return;
  }
  if (!state.swapped) {
    // Pause and lock are only ever lifted for their own owner; the shadow has no owner, so it goes only when the lock is known to be ours.
    await Promise.all([ours ? run.shadow.drop() : undefined, releasePause(run)]).catch((error: unknown) =>
      logger.warn({ err: error }, 'could not clean up; the next rebuild will'),
    );
  }
  await control.release().catch((error: unknown) => logger.warn({ err: error }, 'could not release the rebuild lock'));
}

/**
 * Rebuilds USER_DATA from the event store without stopping reads or the live
 * projector. The global log is folded in memory with the projector's own pure
 * `userRowFrom` into a shadow table (bulk writes in large transactions, rows
 * flushed whenever memory holds `maxRowsInMemory` of them, so a row is usually
 * written once). Close to the head, the live projector is paused (its batch in
 * flight commits first), the shadow catches up with everything in the log, and
 * is swapped in atomically; the live projector then carries on where it was,
 * its VERSION guard skipping what the new table already holds.
 */
export function userDataRebuild(deps: {
  store: EventStore;
  /** Opens the events' sealed personal fields; a user whose keys are gone is rebuilt as forgotten, as the live projector has it. */
  vault: Pick<Vault, 'open'>;
  db: Knex;
  logger: Logger;
  owner?: string;
  /** How often the lock's heartbeat is refreshed; it is stale after three of these. */
  heartbeatMs?: number;
  /** How long a pause holds the live projector unless extended; bounds the harm of a run that dies paused. */
  pauseMs?: number;
  /** Sleep between reads of the log: to go easy on a busy store (and to slow runs down in tests). */
  pageDelayMs?: number;
}) {
  const settings: Omit<RebuildSettings, 'store'> = {
    db: deps.db,
    logger: deps.logger,
    owner: deps.owner ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
    heartbeatMs: deps.heartbeatMs ?? 5000,
    pauseMs: deps.pauseMs ?? 30_000,
    pageDelayMs: deps.pageDelayMs ?? 0,
  };

  async function run(options: RebuildOptions = {}): Promise<RebuildResult> {
    const startedAt = performance.now();
    const keys = noticingMissingKeys(deps.vault);
    const parts = runParts({ ...settings, store: openedEventStore(deps.store, keys.vault) }, options, keys.unforgotten);
    const lock = await takeLock(parts);
    try {
      await startShadow(parts);
      await replayBesideLive(parts);
      const verification = await handOverRetrying(parts);
      await resumeLive(parts);
      return resultOf(parts, startedAt, lock, verification);
    } catch (error) {
      throw failureOfRun(parts.state.swapped ? new SwapUnfinishedError(error) : error, options.signal);
    } finally {
      await cleanUpAndUnlock(parts, lock);
    }
  }

  return { owner: settings.owner, run };
}
