import Database from 'better-sqlite3';
import t from 'tap';
import { foldedPrefixRange, foldName } from '../../shared/read-model/name-search.js';

void t.test('a name folds without case or accents, as MariaDB compares it letter by letter', async (t) => {
  t.equal(foldName('Ada Lovelace'), 'ada lovelace', 'ASCII: lower case only');
  for (const name of ['Émile', 'émile', 'EMILE', 'E\u0301mile', 'ÉMILE']) t.equal(foldName(name), 'emile', name);
  t.equal(foldName('ΣΩΚΡΆΤΗΣ'), 'σωκρατησ', 'tonos dropped, the final sigma as any other');
  t.equal(foldName('İstanbul'), 'istanbul', 'the dot of a capital İ is a mark');
  t.equal(foldName('Ørsted Æbeltoft Łódź Йосиф'), 'ørsted æbeltoft łodz йосиф', 'letters of their own stay, as in the collation');
  t.equal(foldName('Straße ſ ı µ'), 'strase s i μ', 'letters the collation takes for others');
  t.equal(foldName('한글'), '한글', 'Hangul syllables recomposed');
  t.equal(foldName('कमला'), 'कमला', 'a spacing mark (a vowel sign) is part of its letter');
  t.equal(foldName('\u0301'), '', 'nonspacing marks alone fold to nothing');
});

void t.test('a prefix becomes the range of folded names that start with it, in SQLite order', async (t) => {
  t.same(foldedPrefixRange('Ada'), { from: 'ada', to: 'adb' });
  t.same(foldedPrefixRange('ÉM'), { from: 'em', to: 'en' });
  t.same(foldedPrefixRange('a\u{10FFFF}'), { from: 'a\u{10FFFF}', to: 'b' }, 'the highest code point carries over');
  t.same(foldedPrefixRange('\u{D7FF}'), { from: '\u{D7FF}', to: '\u{E000}' }, 'past the surrogates');
  t.equal(foldedPrefixRange('\u0301'), undefined, 'a prefix that folds to nothing matches no name');
  const top = foldedPrefixRange('\u{10FFFF}')!;
  t.ok(Buffer.isBuffer(top.to), 'no upper bound: a BLOB, above every text in SQLite');
  // Every name that starts with the prefix lies in the range and no other, compared as SQLite compares
  // (UTF-8 bytes: code points, where JavaScript's < compares UTF-16 units).
  const db = new Database(':memory:');
  t.teardown(() => db.close());
  const inRange = db.prepare<[string, string, string, string | Buffer]>('SELECT ? >= ? AND ? < ? AS yes').pluck();
  const names = ['ada', 'adam', 'adb', 'ad', 'adaz', 'ada\u{10FFFF}', 'ac\u{10FFFF}', 'b', 'a\u{FFFF}x', 'a\u{10000}', 'a\u{FFFE}', 'em', 'emz', 'en', 'e\u{10FFFF}'];
  for (const prefix of ['ada', 'a\u{FFFF}', 'a\u{FFFE}', 'em', 'e\u{10FFFF}']) {
    const { from, to } = foldedPrefixRange(prefix)!;
    t.same(
      names.filter((name) => inRange.get(name, from, name, to) === 1),
      names.filter((name) => name.startsWith(prefix)),
      JSON.stringify(prefix),
    );
  }
});
