/**
 * The read model: `queries`.`USER_DATA`, one row per user, written by the
 * projector (and the rebuild), read by the query side. Its schema is in
 * `migrations.ts`, its checkpoints in `checkpoints.ts`, its quarantine in
 * `dead-letters.ts`.
 */
export const userDataTable = 'USER_DATA';

/** The projection's name in PROJECTION_CHECKPOINT, PROJECTION_CONTROL and PROJECTION_DEAD_LETTER. */
export const projectionName = 'USER_DATA';

/**
 * One row of `queries`.`USER_DATA`: a user as of stream revision VERSION. A
 * 'forgotten' row is the tombstone of a person who was forgotten (GDPR erasure):
 * NAME and EMAIL are empty, the dates and VERSION remain, and it never shows in
 * the read API (410 by id, left out of every list).
 */
export interface UserRow {
  ID_USER_DATA: string;
  NAME: string;
  EMAIL: string;
  STATUS: 'registered' | 'validated' | 'deactivated' | 'forgotten';
  DATE_REGISTER: string;
  DATE_VALIDATED: string | null;
  DATE_DEACTIVATED: string | null;
  DATE_UPDATED: string;
  VERSION: number;
}

/**
 * A USER_DATA row as a driver returned it, VERSION made a number (MariaDB's
 * BIGINT can come back as a string or a bigint, depending on the driver's settings).
 */
export const userRowRead = (row: UserRow): UserRow => ({ ...row, VERSION: Number(row.VERSION) });
