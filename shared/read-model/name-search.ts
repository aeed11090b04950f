import type Database from 'better-sqlite3';

/**
 * How the embedded read DB finds users by a prefix of their name: through an index on
 * the name folded (`foldName`), so a search reads the rows it finds rather than the
 * table. MariaDB needs none of this: the read model's collation (utf8mb4_general_ci, see
 * `foldName`) already compares names without case or accents, and its `IDX_USER_DATA_NAME`
 * serves `NAME LIKE 'prefix%'`.
 *
 * SQLite's `LIKE` ignores the case of ASCII letters only, and a case-insensitive `LIKE`
 * uses no index on a column of binary collation, so a prefix search used to scan the
 * whole table on the read API's event loop (better-sqlite3 is synchronous): 108 ms for
 * a prefix no one has among 500,000 users, 226 ms with a letter beyond ASCII, every
 * other request of the read API waiting meanwhile (docs/design-decisions.md,
 * "Name searches on the embedded read DB").
 */

/**
 * The fold's own version: raised whenever `foldName` changes what it makes of any name, so that a read DB
 * whose index an earlier fold built has it rebuilt (`migrateReadDb`), as for another Node.js's Unicode tables.
 */
export const foldNameVersion = 2;

/** The SQL function that folds a name, registered on every connection to an embedded read DB (`registerNameFolding`). */
export const foldNameFunction = 'users_fold_name';

/** The embedded read DB's index on the folded name (with the columns a search narrows by and is ordered by, so it covers them). */
export const foldedNameIndex = 'IDX_USER_DATA_NAME_FOLDED';

const beyondAscii = /[^\p{ASCII}]/u;
/**
 * The accents `foldName` drops once a name is decomposed: the Combining Diacritical Marks, but the
 * breve of `й`, a letter of its own to MariaDB's collation as to Russian. Marks of other blocks (Hebrew
 * points, Arabic vowel signs) stay, as they do there.
 */
const accents = /[\u0300-\u0305\u0307-\u036f]+|(?<!и)\u0306/g;
/** Letters MariaDB's collation takes for another: `ß` and `ſ` for `s`, dotless `ı` for `i`, the micro sign for `μ`, `ς` for `σ`. */
const sameLetters: Readonly<Record<string, string>> = { ß: 's', ſ: 's', ı: 'i', µ: 'μ', ς: 'σ' };
const otherLetters = /[ßſıµς]/g;

/**
 * A name as the embedded read DB compares it: lower case, without accents, a few letters as
 * another (`sameLetters`). The same function folds the stored names (in the index) and the prefix
 * a caller sends, so a prefix matches what MariaDB's `NAME LIKE 'prefix%'` matches under the
 * read model's collation, utf8mb4_general_ci (knex makes the table with the connection's
 * character set, whose default collation that is; the database's own, utf8mb4_unicode_ci, does
 * not reach the table): `emile`, `ÉMILE` and `Émile` are one name, `straß` starts `Strasser`
 * as it does there, `ø`, `ł`, `æ` and `й` stay letters of their own. Checked against the
 * server for 112 pairs of Latin, Greek, Cyrillic, Hebrew and Arabic letters: they agree on all
 * but two, the capital `ẞ` (`s` here, a letter of its own there, where its small `ß` is `s`)
 * and the Greek iota subscript (a mark here, an iota there). A
 * decomposed `é` (`e` and a combining accent) is `e` here, where MariaDB's `LIKE` matches it
 * to nothing. Decomposed marks are dropped and the rest recomposed, so a Hangul syllable stays
 * one letter. Pure ASCII, the common case, is only lower-cased.
 *
 * It follows the Unicode tables of the Node.js that runs it: a Node.js with other tables may
 * fold a rare letter otherwise, so the embedded read DB's index is rebuilt when the version
 * changes (`migrateReadDb`).
 */
export function foldName(name: string): string {
  if (!beyondAscii.test(name)) return name.toLowerCase();
  return name
    .toLowerCase()
    .normalize('NFD')
    .replace(accents, '')
    .normalize('NFC')
    .replace(otherLetters, (letter) => sameLetters[letter]!);
}

/** Every string above every text value in SQLite's order (a BLOB sorts after any TEXT): the upper bound of a range with none. */
const aboveAllText = Buffer.from([0xff]);

/**
 * The range of folded names that start with `prefix` folded: `[from, to)` in SQLite's
 * binary order (UTF-8 bytes, which is code point order). `to` is the folded prefix with
 * its last code point one higher: a name starts with the prefix exactly when it sorts at
 * or after the prefix and before that. Undefined for a prefix that folds to nothing (a
 * combining mark alone): it matches no name, as on MariaDB.
 */
export function foldedPrefixRange(prefix: string): { from: string; to: string | Buffer } | undefined {
  const from = foldName(prefix);
  if (from === '') return undefined;
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
