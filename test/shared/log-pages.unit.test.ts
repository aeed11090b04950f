import t from 'tap';
import { eventsOfPage } from '../../shared/event-store/sqlite-log-pages.js';

// A page's text as the log reader's statement builds it: [position, stream, revision, type, data].
const page = (...tuples: Array<[number | string, string, number]>) => JSON.stringify(tuples.map(([position, stream, revision]) => [position, stream, revision, 'A', { n: revision }]));
const take = (text: string, last?: [string, bigint]) => eventsOfPage({ pieces: [{ text, count: (JSON.parse(text) as unknown[]).length, after: 'x@0', last }] });

void t.test('a page in SQLite\'s order is taken in, positions as numbers or strings', async (t) => {
  // UTF-8 order: U+FFFF sorts before an astral code point, though its UTF-16 unit is larger.
  const text = page([5, 'p-a', 0], [9, 'p-a', 1], [2, 'p-b', 0], ['7', 'p-\uFFFF', 0], [3, 'p-😀', 0], [4, 'p-😀', 1]);
  const events = take(text, ['p-😀', 1n]);
  t.same(
    events.map((e) => [e.streamId, e.revision, e.position]),
    [['p-a', 0, 5n], ['p-a', 1, 9n], ['p-b', 0, 2n], ['p-\uFFFF', 0, 7n], ['p-😀', 0, 3n], ['p-😀', 1, 4n]],
  );
  t.same(take(page([1, 'p', 0], [2, 'p-', 0])).length, 2, 'a stream id before a longer one it begins');
});

void t.test('a page out of SQLite\'s order fails the read', async (t) => {
  const outOfOrder = /came back out of order/;
  t.throws(() => take(page([1, 'p-a', 0], [2, 'p-b', 0], [3, 'p-a', 1])), outOfOrder, 'a stream that comes back');
  t.throws(() => take(page([1, 'p-b', 0], [2, 'p-a', 0])), outOfOrder, 'streams in the wrong order');
  t.throws(() => take(page([1, 'p-😀', 0], [2, 'p-\uFFFF', 0])), outOfOrder, 'in UTF-16 order, not UTF-8\'s');
  t.throws(() => take(page([1, 'p-a', 1], [2, 'p-a', 1])), outOfOrder, 'a revision that does not grow');
  t.throws(() => take(page([1, 'p-a', 0], [2, 'p-b', 0]), ['p-c', 0n]), outOfOrder, 'a page that ends elsewhere than SQLite ended it');
  t.throws(() => take(page([1.5, 'p-a', 0])), SyntaxError, 'a position that is not an integer');
});
