import type { FromSchema } from 'json-schema-to-ts';
import { ServiceError } from '../shared/errors.js';
import { fromDbDate } from '../shared/read-db.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import type { UserReads } from './user-reads.js';

/**
 * The statuses the read API shows and filters by. A 'forgotten' row (the
 * tombstone of an erased person) is never shown: by id it is 410
 * USER_FORGOTTEN, lists leave it out, and it cannot be asked for as a filter.
 */
export const visibleStatuses = ['registered', 'validated', 'deactivated'] as const;
export type VisibleStatus = (typeof visibleStatuses)[number];

/** A user as the read API shows it. */
export const userViewSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    email: { type: 'string' },
    status: { type: 'string', enum: visibleStatuses },
    registeredAt: { type: 'string' },
    validatedAt: { type: 'string' },
    deactivatedAt: { type: 'string' },
    updatedAt: { type: 'string' },
    version: { type: 'integer' },
  },
  required: ['id', 'name', 'email', 'status', 'registeredAt', 'updatedAt', 'version'],
} as const;
export type UserView = FromSchema<typeof userViewSchema>;

/** A row the API may show (not a forgotten one's tombstone). */
export type VisibleUserRow = UserRow & { STATUS: VisibleStatus };
export const isVisible = (row: UserRow): row is VisibleUserRow => row.STATUS !== 'forgotten';

export const userViewFrom = (row: VisibleUserRow): UserView => ({
  id: row.ID_USER_DATA,
  name: row.NAME,
  email: row.EMAIL,
  status: row.STATUS,
  registeredAt: fromDbDate(row.DATE_REGISTER),
  ...(row.DATE_VALIDATED ? { validatedAt: fromDbDate(row.DATE_VALIDATED) } : {}),
  ...(row.DATE_DEACTIVATED ? { deactivatedAt: fromDbDate(row.DATE_DEACTIVATED) } : {}),
  updatedAt: fromDbDate(row.DATE_UPDATED),
  version: Number(row.VERSION),
});

export interface UserFilter {
  email?: string;
  name?: string;
  status?: VisibleStatus;
  limit: number;
  cursor?: string;
}

/** Cursors are opaque to callers: the last id of the previous page, base64url-encoded. */
const encodeCursor = (id: string) => Buffer.from(id, 'utf8').toString('base64url');
function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new ServiceError('INVALID_CURSOR', 'cursor is not one this API returned');
  return id;
}

/** The read API's answers over the prepared reads: rows become views, cursors are checked. */
export function userQueries(reads: UserReads) {
  return {
    /** The user; 'forgotten' when the row is a forgotten person's tombstone (the API answers 410); undefined when there is no row. */
    byId: async (id: string): Promise<UserView | 'forgotten' | undefined> => {
      const row = await reads.byId(id);
      if (!row) return undefined;
      return isVisible(row) ? userViewFrom(row) : 'forgotten';
    },

    /** Keyset pagination in id order: registration order for UUIDv7 ids; an Idempotency-Key's UUIDv5 id sorts anywhere. */
    list: async (filter: UserFilter) => {
      // One object of one shape, absent filters left undefined (the reads test each for undefined).
      const rows = await reads.list({
        email: filter.email?.trim().toLowerCase(),
        name: filter.name,
        status: filter.status,
        afterId: filter.cursor === undefined ? undefined : decodeCursor(filter.cursor),
        limit: filter.limit + 1,
      });
      const page = rows.slice(0, filter.limit);
      const last = page[page.length - 1];
      return {
        // The reads leave forgotten rows out already; this keeps the type honest.
        items: page.filter(isVisible).map(userViewFrom),
        nextCursor: rows.length > filter.limit && last ? encodeCursor(last.ID_USER_DATA) : null,
      };
    },

    /** The stream revision the read model holds for a user, -1 when it has no row. */
    versionOf: (id: string) => reads.versionOf(id),
  };
}
export type UserQueries = ReturnType<typeof userQueries>;
