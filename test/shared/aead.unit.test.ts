import { randomBytes } from 'node:crypto';
import sodium from 'sodium-native';
import t from 'tap';
import { sealText, unsealText } from '../../shared/personal-data/aead.js';

const key = randomBytes(32);
const stream = 'user-0190a3b4-1234-7abc-8def-0123456789ab';
const clear = JSON.stringify({ name: 'Zoë Ørsted 山田', email: 'zoe@example.org' });

/** The sealed form with one bit of its bytes (after the version prefix) flipped. */
function flipped(sealed: string, at: number): string {
  const bytes = Buffer.from(sealed.slice(3), 'base64url');
  bytes[at] = bytes[at]! ^ 1;
  return `${sealed.slice(0, 3)}${bytes.toString('base64url')}`;
}
const byteLength = (sealed: string) => Buffer.from(sealed.slice(3), 'base64url').length;

void t.test('a sealed text opens under its key, stream and type, multi-byte characters included', async (t) => {
  const sealed = sealText(key, stream, 'UserRegistered', clear);
  t.match(sealed, /^v2\.[A-Za-z0-9_-]+$/, 'versioned, base64url');
  t.notOk(sealed.includes('zoe'), 'nothing in clear');
  t.equal(unsealText(key, stream, 'UserRegistered', sealed), clear);
  t.not(sealText(key, stream, 'UserRegistered', clear), sealed, 'a fresh nonce each time');
  t.equal(unsealText(key, stream, 'UserRegistered', sealText(key, stream, 'UserRegistered', '')), '', 'an empty text too');
  const large = JSON.stringify({ name: 'Zoë '.repeat(3000) });
  t.equal(unsealText(key, stream, 'UserRegistered', sealText(key, stream, 'UserRegistered', large)), large, 'a text larger than the scratch buffers too');
  t.equal(unsealText(key, stream, 'UserRegistered', sealed), clear, 'and a small one after it');
  // A key held in a view of a larger buffer (as a store may hand it out) seals and opens the same.
  const larger = Buffer.concat([randomBytes(5), key, randomBytes(3)]);
  const view = new Uint8Array(larger.buffer, larger.byteOffset + 5, 32);
  t.equal(unsealText(view, stream, 'UserRegistered', sealed), clear, 'a key in another buffer opens it');
});

void t.test('a sealed text does not open anywhere else, nor when a single bit differs', async (t) => {
  const sealed = sealText(key, stream, 'UserRenamed', clear);
  const cases: Array<[string, Buffer, string, string, string]> = [
    ['another key', randomBytes(32), stream, 'UserRenamed', sealed],
    ['another stream', key, 'user-0190a3b4-1234-7abc-8def-0123456789ac', 'UserRenamed', sealed],
    ['another type', key, stream, 'UserEmailChanged', sealed],
    ['a bit of the nonce flipped', key, stream, 'UserRenamed', flipped(sealed, 0)],
    ['a bit of the nonce end flipped', key, stream, 'UserRenamed', flipped(sealed, 23)],
    ['a bit of the tag flipped', key, stream, 'UserRenamed', flipped(sealed, 24)],
    ['a bit of the ciphertext flipped', key, stream, 'UserRenamed', flipped(sealed, byteLength(sealed) - 1)],
    ['cut short', key, stream, 'UserRenamed', sealed.slice(0, 40)],
    ['read as the older form', key, stream, 'UserRenamed', `v1.${sealed.slice(3)}`],
    ['an unknown version', key, stream, 'UserRenamed', `v3.${sealed.slice(3)}`],
    ['not sealed at all', key, stream, 'UserRenamed', clear],
  ];
  for (const [what, k, s, type, text] of cases) t.equal(unsealText(k, s, type, text), undefined, what);
});

/**
 * Sealed by the first sealed form (v1, AES-256-GCM with the data key itself), as events written before v2 hold
 * them: they must keep opening, and only where they belong.
 */
void t.test('texts sealed in the older form (v1) still open, and only under their key, stream and type', async (t) => {
  const oldKey = Buffer.from('12ff037e9b370a1efcf0bf738d0e15c6cb5116d5c596c79cdbb0bee202d47aca', 'hex');
  const registered =
    'v1.crJPqMwehvtVgnFexbOuAa7toDeuQXXp67Z_rDX6k7_VhD-wLy5Zo7LfLmuZskLOGx_gNhcH0JIeavpn0yYnyO7ZN9RSsIQYpqtz3oQhQ7kl0sb6';
  const emailChanged =
    'v1.4B-whGfPTCPCW9x5aMFE7Ad6rEq7tw5lEdri-V-NqNt1IW08a9YQEGcAZ5D9sH7OgNU5f79jzRzj-b_TkcmaRgtxwZc9HIpG3Bl850SZSVFk7oCW8EfH2hapXQ';
  t.equal(unsealText(oldKey, stream, 'UserRegistered', registered), clear);
  t.equal(
    unsealText(oldKey, stream, 'UserEmailChanged', emailChanged),
    JSON.stringify({ email: 'zoe.o@example.org', previousEmail: 'zoe@example.org' }),
  );
  const cases: Array<[string, Buffer, string, string, string]> = [
    ['another key', key, stream, 'UserRegistered', registered],
    ['another stream', oldKey, 'user-0190a3b4-1234-7abc-8def-0123456789ac', 'UserRegistered', registered],
    ['another type', oldKey, stream, 'UserRenamed', registered],
    ['a bit of the IV flipped', oldKey, stream, 'UserRegistered', flipped(registered, 0)],
    ['a bit of the tag flipped', oldKey, stream, 'UserRegistered', flipped(registered, 12)],
    ['a bit of the ciphertext flipped', oldKey, stream, 'UserRegistered', flipped(registered, byteLength(registered) - 1)],
    ['cut short', oldKey, stream, 'UserRegistered', registered.slice(0, 20)],
    ['read as the newer form', oldKey, stream, 'UserRegistered', `v2.${registered.slice(3)}`],
  ];
  for (const [what, k, s, type, text] of cases) t.equal(unsealText(k, s, type, text), undefined, what);
});

void t.test('texts, streams and types of every length in turn seal and open as libsodium reads the format', async (t) => {
  // Scratch buffers are reused through views made once per length: lengths in a shuffled order,
  // each checked against the format opened by hand (subkey by the KDF, associated data "stream\ntype").
  const subkey = Buffer.alloc(32);
  sodium.crypto_kdf_derive_from_key(subkey, 1, Buffer.from('usrseal2'), key);
  const lengths = Array.from({ length: 400 }, (_, i) => i).sort(() => Math.random() - 0.5);
  let opened = 0;
  let byHand = 0;
  for (const n of lengths) {
    const text = 'é'.repeat(n % 7) + 'x'.repeat(n);
    const streamId = `user-${'s'.repeat(n % 50)}`;
    const type = n % 2 === 0 ? 'UserRenamed' : 'UserEmailChanged';
    const sealed = sealText(key, streamId, type, text);
    if (unsealText(key, streamId, type, sealed) === text) opened += 1;
    const bytes = Buffer.from(sealed.slice(3), 'base64url');
    const clear = Buffer.alloc(bytes.length - 40);
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
      clear, null, bytes.subarray(40), bytes.subarray(24, 40), Buffer.from(`${streamId}\n${type}`), bytes.subarray(0, 24), subkey,
    );
    if (clear.toString('utf8') === text) byHand += 1;
    // The same length of stream id, other content: the associated data must differ.
    t.equal(unsealText(key, streamId.replace(/.$/, '!'), type, sealed), undefined);
  }
  t.equal(opened, lengths.length, 'each opens to its text');
  t.equal(byHand, lengths.length, 'each opens by hand to its text');
});

void t.test('each key buffer keeps its own subkey: views of one slab, copies, and another key', async (t) => {
  // Keys as the packed key store hands them out: views of one buffer, side by side.
  const slab = randomBytes(64);
  const first = slab.subarray(0, 32);
  const second = slab.subarray(32, 64);
  const sealedFirst = sealText(first, stream, 'UserRenamed', clear);
  const sealedSecond = sealText(second, stream, 'UserRenamed', clear);
  t.equal(unsealText(first, stream, 'UserRenamed', sealedFirst), clear);
  t.equal(unsealText(second, stream, 'UserRenamed', sealedSecond), clear);
  t.equal(unsealText(second, stream, 'UserRenamed', sealedFirst), undefined, 'the neighbour view does not open it');
  t.equal(unsealText(first, stream, 'UserRenamed', sealedSecond), undefined, 'nor the other way round');
  // A fresh view or copy of the same bytes (a key read again) derives the same subkey.
  t.equal(unsealText(slab.subarray(0, 32), stream, 'UserRenamed', sealedFirst), clear, 'a fresh view of the same bytes');
  t.equal(unsealText(Buffer.from(first), stream, 'UserRenamed', sealedFirst), clear, 'a copy');
  t.equal(unsealText(new Uint8Array(first), stream, 'UserRenamed', sealedFirst), clear, 'a plain Uint8Array copy');
  t.equal(unsealText(randomBytes(32), stream, 'UserRenamed', sealedFirst), undefined, 'another key does not');
  // A key buffer that takes no new property still seals and opens (its subkey derived each time).
  const fixed = Object.preventExtensions(Buffer.from(first));
  t.equal(unsealText(fixed, stream, 'UserRenamed', sealedFirst), clear, 'a non-extensible copy opens');
  t.equal(unsealText(first, stream, 'UserRenamed', sealText(fixed, stream, 'UserRenamed', clear)), clear, 'and seals');
});
