import type Database from 'better-sqlite3';

/**
 * How the embedded read DB finds users by a prefix of their name: through an index on
 * the name folded (`foldName`), so a search reads the rows it finds rather than the
 * table. MariaDB needs none of this: its collation (utf8mb4_general_ci by default)
 * already compares names without case or accents, and its `IDX_USER_DATA_NAME` serves
 * `NAME LIKE 'prefix%'`.
 *
 * SQLite's `LIKE` ignores the case of ASCII letters only, and a case-insensitive `LIKE`
 * uses no index on a column of binary collation, so a prefix search used to scan the
 * whole table on the read API's event loop (better-sqlite3 is synchronous): 108 ms for
 * a prefix no one has among 500,000 users, 226 ms with a letter beyond ASCII, every
 * other request of the read API waiting meanwhile (docs/design-decisions.md,
 * "Name searches on the embedded read DB").
 */

/** The SQL function that folds a name, registered on every connection to an embedded read DB (`registerNameFolding`). */
export const foldNameFunction = 'users_fold_name';

/** The embedded read DB's index on the folded name (with the columns a search narrows by and is ordered by, so it covers them). */
export const foldedNameIndex = 'IDX_USER_DATA_NAME_FOLDED';

const beyondAscii = /[^\p{ASCII}]/u;
const marks = /\p{M}+/gu;

/**
 * A name as the embedded read DB compares it: lower case, without accents or other
 * combining marks, Greek's final sigma as any other. The same function folds the stored
 * names (in the index) and the prefix a caller sends, so a prefix matches what MariaDB's
 * default collation matches, near enough: `emile`, `ÉMILE` and `Émile` are one name,
 * `ß` and `æ` stay themselves (a collation that expands them, such as a Unicode one,
 * would match `ss` and `ae`). Decomposed marks are dropped and the rest recomposed, so
 * a Hangul syllable stays one letter. Pure ASCII, the common case, is only lower-cased.
 */
export function foldName(name: string): string {
  if (!beyondAscii.test(name)) return name.toLowerCase();
  return name.toLowerCase().normalize('NFD').replace(marks, '').normalize('NFC').replace(/ς/g, 'σ');
}

/** Every string above every text value in SQLite's order (a BLOB sorts after any TEXT): the upper bound of a range with none. */
const aboveAllText = Buffer.from([0xff]);

/**
 * The range of folded names that start with `prefix` folded: `[from, to)` in SQLite's
 * binary order (UTF-8 bytes, which is code point order). `to` is the folded prefix with
 * its last code point one higher: a name starts with the prefix exactly when it sorts at
 * or after the prefix and before that. A prefix that folds to nothing (combining marks
 * alone) matches every name.
 */
export function foldedPrefixRange(prefix: string): { from: string; to: string | Buffer } {
  const from = foldName(prefix);
  const points = [...from];
  while (points.length > 0) {
    const last = points.pop()!.codePointAt(0)!;
    if (last === 0x10ffff) continue;
    // Past the surrogates, which are not characters (a lone one would not survive encoding).
    const next = last + 1 === 0xd800 ? 0xe000 : last + 1;
    return { from, to: points.join('') + String.fromCodePoint(next) };
  }
  return { from, to: aboveAllText };
}

/**
 * Registers `foldNameFunction` on a connection to an embedded read DB. Every connection
 * that writes USER_DATA needs it (SQLite computes the index's entry of every row it
 * writes), and every one that searches by it: the read DB's pool (`openReadDb`) and the
 * read API's own connection. Another program writing the table (the `sqlite3` shell)
 * fails with "no such function" until it defines one; reading it needs nothing.
 */
export function registerNameFolding(connection: Database.Database): void {
  connection.function(foldNameFunction, { deterministic: true }, (name: unknown) => (typeof name === 'string' ? foldName(name) : name));
}
