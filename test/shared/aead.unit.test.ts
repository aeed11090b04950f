import { randomBytes } from 'node:crypto';
import t from 'tap';
import { sealText, unsealText } from '../../shared/personal-data/aead.js';

const key = randomBytes(32);
const stream = 'user-0190a3b4-1234-7abc-8def-0123456789ab';
const clear = JSON.stringify({ name: 'Zoë Ørsted 山田', email: 'zoe@example.org' });

void t.test('a sealed text opens under its key, stream and type, multi-byte characters included', async (t) => {
  const sealed = sealText(key, stream, 'UserRegistered', clear);
  t.match(sealed, /^v1\.[A-Za-z0-9_-]+$/, 'versioned, base64url');
  t.notOk(sealed.includes('zoe'), 'nothing in clear');
  t.equal(unsealText(key, stream, 'UserRegistered', sealed), clear);
  t.not(sealText(key, stream, 'UserRegistered', clear), sealed, 'a fresh IV each time');
});

void t.test('a sealed text does not open anywhere else, nor when a single bit differs', async (t) => {
  const sealed = sealText(key, stream, 'UserRenamed', clear);
  const bytes = Buffer.from(sealed.slice(3), 'base64url');
  const flipped = (at: number) => {
    const copy = Buffer.from(bytes);
    copy[at] = copy[at]! ^ 1;
    return `v1.${copy.toString('base64url')}`;
  };
  const cases: Array<[string, Buffer, string, string, string]> = [
    ['another key', randomBytes(32), stream, 'UserRenamed', sealed],
    ['another stream', key, 'user-0190a3b4-1234-7abc-8def-0123456789ac', 'UserRenamed', sealed],
    ['another type', key, stream, 'UserEmailChanged', sealed],
    ['a bit of the IV flipped', key, stream, 'UserRenamed', flipped(0)],
    ['a bit of the tag flipped', key, stream, 'UserRenamed', flipped(12)],
    ['a bit of the ciphertext flipped', key, stream, 'UserRenamed', flipped(bytes.length - 1)],
    ['cut short', key, stream, 'UserRenamed', sealed.slice(0, 20)],
    ['another version', key, stream, 'UserRenamed', `v2.${sealed.slice(3)}`],
    ['not sealed at all', key, stream, 'UserRenamed', clear],
  ];
  for (const [what, k, s, type, text] of cases) t.equal(unsealText(k, s, type, text), undefined, what);
});
