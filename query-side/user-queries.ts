import type { FromSchema } from 'json-schema-to-ts';
import { ServiceError } from '../shared/errors.js';
import { fromDbDate } from '../shared/read-db.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import type { UserReads } from './user-reads.js';

/** A user as the read API shows it. */
export const userViewSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    email: { type: 'string' },
    status: { type: 'string', enum: ['registered', 'validated', 'deactivated'] },
    registeredAt: { type: 'string' },
    validatedAt: { type: 'string' },
    deactivatedAt: { type: 'string' },
    updatedAt: { type: 'string' },
    version: { type: 'integer' },
  },
  required: ['id', 'name', 'email', 'status', 'registeredAt', 'updatedAt', 'version'],
} as const;
export type UserView = FromSchema<typeof userViewSchema>;

export const userViewFrom = (row: UserRow): UserView => ({
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
  status?: UserRow['STATUS'];
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
    byId: async (id: string) => {
      const row = await reads.byId(id);
      return row ? userViewFrom(row) : undefined;
    },

    /** Keyset pagination in id order (ids are UUIDv7, so that is registration order). */
    list: async (filter: UserFilter) => {
      const rows = await reads.list({
        ...(filter.email !== undefined ? { email: filter.email.trim().toLowerCase() } : {}),
        ...(filter.name !== undefined ? { name: filter.name } : {}),
        ...(filter.status !== undefined ? { status: filter.status } : {}),
        ...(filter.cursor !== undefined ? { afterId: decodeCursor(filter.cursor) } : {}),
        limit: filter.limit + 1,
      });
      const page = rows.slice(0, filter.limit);
      const last = page[page.length - 1];
      return {
        items: page.map(userViewFrom),
        nextCursor: rows.length > filter.limit && last ? encodeCursor(last.ID_USER_DATA) : null,
      };
    },

    /** The stream revision the read model holds for a user, -1 when it has no row. */
    versionOf: (id: string) => reads.versionOf(id),
  };
}
export type UserQueries = ReturnType<typeof userQueries>;
