import t from 'tap';
import { foldedPrefixRange, foldName } from '../../shared/read-model/name-search.js';

void t.test('a name folds without case or accents, as MariaDB default collation compares it', async (t) => {
  t.equal(foldName('Ada Lovelace'), 'ada lovelace', 'ASCII: lower case only');
  for (const name of ['Émile', 'émile', 'EMILE', 'E\u0301mile', 'ÉMILE']) t.equal(foldName(name), 'emile', name);
  t.equal(foldName('ΣΩΚΡΆΤΗΣ'), 'σωκρατησ', 'tonos dropped, the final sigma as any other');
  t.equal(foldName('İstanbul'), 'istanbul', 'the dot of a capital İ is a mark');
  t.equal(foldName('Ørsted Æbeltoft Łódź'), 'ørsted æbeltoft łodz', 'letters of their own stay, as the collation keeps them');
  t.equal(foldName('한글'), '한글', 'Hangul syllables recomposed');
  t.equal(foldName('\u0301'), '', 'marks alone fold to nothing');
});

void t.test('a prefix becomes the range of folded names that start with it', async (t) => {
  t.same(foldedPrefixRange('Ada'), { from: 'ada', to: 'adb' });
  t.same(foldedPrefixRange('ÉM'), { from: 'em', to: 'en' });
  t.same(foldedPrefixRange('a\u{10FFFF}'), { from: 'a\u{10FFFF}', to: 'b' }, 'the highest code point carries over');
  t.same(foldedPrefixRange('\u{D7FF}'), { from: '\u{D7FF}', to: '\u{E000}' }, 'past the surrogates');
  const open = foldedPrefixRange('\u0301');
  t.equal(open.from, '');
  t.ok(Buffer.isBuffer(open.to), 'no upper bound: a BLOB, above every text in SQLite');
  // Every name that starts with the prefix lies in the range, and no other.
  const names = ['ada', 'adam', 'adb', 'ad', 'adaz', 'ada\u{10FFFF}', 'ac\u{10FFFF}', 'b'];
  const { from, to } = foldedPrefixRange('ada');
  t.same(
    names.filter((n) => n >= from && n < (to as string)),
    names.filter((n) => n.startsWith('ada')),
  );
});
