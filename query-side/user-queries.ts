import type { FromSchema } from 'json-schema-to-ts';
import type { Knex } from 'knex';
import { ServiceError } from '../shared/errors.js';
import { fromDbDate, isMariaDb, readDbError } from '../shared/read-db.js';
import type { UserRow } from '../projector/user-row.js';

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

// '!' as the LIKE escape character needs no escaping itself in either SQL dialect.
const escapeLike = (text: string) => text.replace(/[!%_]/g, (c) => `!${c}`);

export function userQueries(db: Knex, options: { timeoutMs: number } = { timeoutMs: 5000 }) {
  // MariaDB kills a query that ran out of time; the embedded engine has nothing to cancel.
  const cancel = { cancel: isMariaDb(db) };
  const guarded = async <T>(query: () => Promise<T>): Promise<T> => {
    try {
      return await query();
    } catch (error) {
      throw readDbError(error);
    }
  };
  return {
    byId: (id: string) =>
      guarded(async () => {
        const row = await db<UserRow>('USER_DATA').where('ID_USER_DATA', id).first().timeout(options.timeoutMs, cancel);
        return row ? userViewFrom(row) : undefined;
      }),

    /** Keyset pagination in id order (ids are UUIDv7, so that is registration order). */
    list: (filter: UserFilter) =>
      guarded(async () => {
        const query = db<UserRow>('USER_DATA').orderBy('ID_USER_DATA').limit(filter.limit + 1).timeout(options.timeoutMs, cancel);
        if (filter.email !== undefined) void query.where('EMAIL', filter.email.trim().toLowerCase());
        if (filter.name !== undefined) void  query.whereRaw("NAME LIKE ? ESCAPE '!'", [`${escapeLike(filter.name)}%`]);
        if (filter.status !== undefined) void query.where('STATUS', filter.status);
        if (filter.cursor !== undefined) void query.where('ID_USER_DATA', '>', decodeCursor(filter.cursor));
        const rows = await query;
        const page = rows.slice(0, filter.limit);
        const last = page[page.length - 1];
        return {
          items: page.map(userViewFrom),
          nextCursor: rows.length > filter.limit && last ? encodeCursor(last.ID_USER_DATA) : null,
        };
      }),

    /** The stream revision the read model holds for a user, -1 when it has no row. */
    versionOf: (id: string) =>
      guarded(async () => {
        const row = await db<UserRow>('USER_DATA').where('ID_USER_DATA', id).first('VERSION').timeout(options.timeoutMs, cancel);
        return row ? Number(row.VERSION) : -1;
      }),
  };
}
export type UserQueries = ReturnType<typeof userQueries>;
