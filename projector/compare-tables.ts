import type { Knex } from 'knex';

export interface TableDifferences {
  /** Rows of the expected table looked at. */
  compared: number;
  /** In the expected table, not in the actual one. */
  missing: number;
  /** In the actual table, not in the expected one. */
  extra: number;
  /** In both, with some column different. */
  different: number;
  /** A few of each kind, in words. */
  examples: string[];
}

type Row = Record<string, unknown>;

const key = 'ID_USER_DATA';
const examplesPerKind = 3;

/** Drivers return numbers, strings or (for big numbers) strings again; compare them as text. */
function asText(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}
const show = (value: unknown) => {
  const text = asText(value);
  return text === null ? 'NULL' : JSON.stringify(text);
};

/**
 * Columns that hold a person's data: a difference names the column, never the values.
 * The report goes to a terminal, a CI log or a ticket, where an erasure cannot reach it.
 */
const personalColumns: ReadonlySet<string> = new Set(['NAME', 'EMAIL']);

function columnDifferences(expected: Row, actual: Row): string[] {
  const columns = new Set([...Object.keys(expected), ...Object.keys(actual)]);
  const out: string[] = [];
  for (const column of columns) {
    if (asText(expected[column]) === asText(actual[column])) continue;
    out.push(personalColumns.has(column) ? `${column} differs (personal data: values not shown)` : `${column} ${show(actual[column])}, expected ${show(expected[column])}`);
  }
  return out;
}

/**
 * Compares two tables of the same schema row by row, both read in pages in the
 * database's own ID order: each page of the expected table fixes an ID range,
 * and the actual table's rows in that range are matched against it. Values are
 * compared as the database returns them, so both tables must share a schema.
 */
export async function compareUserTables(
  db: Knex,
  tables: { expected: string; actual: string },
  options: { pageSize?: number; onPage?: () => Promise<void> } = {},
): Promise<TableDifferences> {
  const pageSize = options.pageSize ?? 5000;
  const result: TableDifferences = { compared: 0, missing: 0, extra: 0, different: 0, examples: [] };
  const shown = { missing: 0, extra: 0, different: 0 };
  const note = (kind: keyof typeof shown, text: string) => {
    result[kind] += 1;
    if (shown[kind]++ < examplesPerKind) result.examples.push(`${kind}: ${text}`);
  };

  /** The next `pageSize` rows of `table` in ID order, after `from`. */
  const pageAfter = (table: string, from: string | undefined) =>
    db(table)
      .modify((q) => void (from === undefined ? q : q.where(key, '>', from)))
      .orderBy(key)
      .limit(pageSize)
      .select<Row[]>('*');

  let after: string | undefined;
  for (;;) {
    const page = await pageAfter(tables.expected, after);
    if (page.length === 0) break;
    const last = page[page.length - 1]![key] as string;
    const actual = await db(tables.actual)
      .modify((q) => {
        if (after !== undefined) void q.where(key, '>', after);
        void q.where(key, '<=', last);
      })
      .select<Row[]>('*');
    const byId = new Map(actual.map((row) => [String(row[key]), row]));
    for (const row of page) {
      const id = String(row[key]);
      const other = byId.get(id);
      byId.delete(id);
      result.compared += 1;
      if (!other) note('missing', `${id} (VERSION ${show(row.VERSION)})`);
      else {
        const differences = columnDifferences(row, other);
        if (differences.length > 0) note('different', `${id}: ${differences.join('; ')}`);
      }
    }
    for (const [id, row] of byId) note('extra', `${id} (VERSION ${show(row.VERSION)})`);
    await options.onPage?.();
    after = last;
    if (page.length < pageSize) break;
  }
  // Whatever the actual table has past the expected table's last ID is extra.
  for (;;) {
    const tail = await pageAfter(tables.actual, after);
    for (const row of tail) note('extra', `${String(row[key])} (VERSION ${show(row.VERSION)})`);
    if (tail.length < pageSize) return result;
    after = tail[tail.length - 1]![key] as string;
    await options.onPage?.();
  }
}
