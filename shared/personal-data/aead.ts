import { createDecipheriv, randomFillSync } from 'node:crypto';
import sodium from 'sodium-native';

/**
 * The sealing itself: an AEAD over the JSON of an event's personal fields, the
 * stream id and event type as associated data, so a sealed payload cannot be
 * moved to another user or type. Used by the vault (`vault.ts`), which finds
 * the keys and shapes the events.
 *
 * Two sealed forms, told apart by their prefix; both open for as long as their
 * key exists, so events sealed by an earlier version keep reading:
 *  - `v2.` + base64url(nonce[24] | tag[16] | ciphertext): XChaCha20-Poly1305
 *    (libsodium, through sodium-native) under a subkey derived from the user's
 *    data key by libsodium's KDF (context `usrseal2`, id 1), so the data key is
 *    never used by two algorithms. Written by `sealText` since it exists.
 *    One call into libsodium: 1.8-2.0 µs per open or seal of a typical payload
 *    on the reference machine, against 8-10 µs for v1 in the same run.
 *  - `v1.` + base64url(iv[12] | tag[16] | ciphertext): AES-256-GCM through
 *    node:crypto, the data key used directly. Only opened now. Its cost is the
 *    cipher's setup in node:crypto (`createDecipheriv` and the calls on the
 *    object, about 1 µs of it in OpenSSL, the rest JavaScript); see
 *    docs/design-decisions.md for why the format changed.
 *
 * A derived subkey lives only in memory, beside the data key it came from (a
 * property of that key's buffer): destroying the data key in the key store
 * leaves nothing from which it could be derived again. Like the data keys read
 * from a store, its bytes stay in the process's memory until collected (subkeys
 * share slabs of 1,024, so a slab goes when the last of them does).
 */
const v1 = 'v1.';
const v2 = 'v2.';
const tagBytes = 16;
const v1IvBytes = 12;
const nonceBytes = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES; // 24
const head = nonceBytes + tagBytes;

const kdfContext = Buffer.from('usrseal2', 'latin1');
/**
 * Where a data key's buffer keeps its subkey: a property of the buffer, so the
 * subkey lives exactly as long as the key. Not a WeakMap keyed by the buffer: a
 * rebuild opens four events of each user under a key buffer it has just read,
 * and a WeakMap lookup (a hash of the buffer, made on first use) cost 0.15 to
 * 0.37 µs a call against 0.05 to 0.16 for the property (200 pages of 1,000 fresh
 * key views, each used four times), 0.25 s of the fold's thread per 1,000,000
 * events in a profile (docs/design-decisions.md).
 */
const subkeyProperty = Symbol('users-service.subkey');
type KeyWithSubkey = Uint8Array & { [subkeyProperty]?: Buffer };
/**
 * Room for a subkey: a view of a slab shared by 1,024 of them, not a buffer of its
 * own each (a buffer's own memory costs more to make and to collect than deriving
 * the subkey: a rebuild derives one per user).
 */
const subkeyBytes = sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
let subkeySlab = Buffer.alloc(0);
let subkeyAt = 0;
function subkeySpace(): Buffer {
  if (subkeyAt === subkeySlab.length) {
    subkeySlab = Buffer.alloc(subkeyBytes * 1024);
    subkeyAt = 0;
  }
  subkeyAt += subkeyBytes;
  return subkeySlab.subarray(subkeyAt - subkeyBytes, subkeyAt);
}

/** The v2 subkey of a data key, derived once per key buffer. */
function subkeyOf(key: KeyWithSubkey): Buffer {
  let subkey = key[subkeyProperty];
  if (!subkey) {
    subkey = subkeySpace();
    sodium.crypto_kdf_derive_from_key(subkey, 1, kdfContext, Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength));
    // A buffer that takes no new property (Object.preventExtensions) derives its subkey on every use.
    if (Object.isExtensible(key)) key[subkeyProperty] = subkey;
  }
  return subkey;
}

/**
 * Random nonces drawn from a buffer filled 1,024 at a time: the same CSPRNG bytes
 * as one `randomBytes(24)` per seal, at a fraction of the cost (each call is a few
 * microseconds of fixed overhead). XChaCha20's 192-bit nonce makes random nonces
 * safe for any number of seals under one key.
 */
const noncePool = Buffer.alloc(nonceBytes * 1024);
let nonceAt = noncePool.length;
function copyNonce(to: Buffer): void {
  if (nonceAt === noncePool.length) {
    randomFillSync(noncePool);
    nonceAt = 0;
  }
  noncePool.copy(to, 0, nonceAt, nonceAt + nonceBytes);
  nonceAt += nonceBytes;
}

/**
 * Scratch buffers for one seal or open at a time (every call here is synchronous):
 * the sealed bytes, the clear bytes and the associated data are written into them
 * instead of into new buffers per call (0.6 to 1 µs less per open in a loop, and
 * less garbage). Clear bytes are zeroed after use. Payloads too large for them
 * (not the service's: a name and an address take a few hundred bytes) take new
 * buffers.
 */
const scratchBytes = 4096;
const clearScratch = Buffer.allocUnsafeSlow(scratchBytes);
const aadScratch = Buffer.allocUnsafeSlow(scratchBytes);

/** A v2 form's bytes with views of its nonce and tag (the ciphertext follows at `head`). */
interface Frame {
  bytes: Buffer;
  nonce: Buffer;
  tag: Buffer;
}
const frameOf = (bytes: Buffer): Frame => ({ bytes, nonce: bytes.subarray(0, nonceBytes), tag: bytes.subarray(nonceBytes, head) });
/** The scratch frame, its views made once. */
const scratchFrame = frameOf(Buffer.allocUnsafeSlow(scratchBytes));

/**
 * Views of the first `length` bytes of a scratch buffer, made once per length: a
 * view is an object of its own, and making three per open cost more than the
 * cipher's work on a typical payload.
 */
function prefixViews(of: Buffer, from = 0): (length: number) => Buffer {
  const views: Buffer[] = [];
  return (length) => (views[length] ??= of.subarray(from, from + length));
}
const aadView = prefixViews(aadScratch);
const clearView = prefixViews(clearScratch);
const cipherView = prefixViews(scratchFrame.bytes, head);

/** The associated data (stream id and event type), in its scratch buffer when it fits. */
function aadOf(streamId: string, type: string): Buffer {
  if ((streamId.length + type.length + 1) * 3 > scratchBytes) return Buffer.from(`${streamId}\n${type}`, 'utf8');
  let length = aadScratch.write(streamId, 0, 'utf8');
  aadScratch[length++] = 0x0a;
  length += aadScratch.write(type, length, 'utf8');
  return aadView(length);
}

/** The sealed form (v2) of `clear` (JSON text of the personal fields) under `key`, bound to the stream and type. */
export function sealText(key: Uint8Array, streamId: string, type: string, clear: string): string {
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  const fits = head + clear.length * 3 <= scratchBytes;
  const message = fits ? clearView(clearScratch.write(clear, 'utf8')) : Buffer.from(clear, 'utf8');
  const length = head + message.length;
  const frame = fits ? scratchFrame : frameOf(Buffer.allocUnsafe(length));
  copyNonce(frame.nonce);
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
    fits ? cipherView(message.length) : frame.bytes.subarray(head, length),
    frame.tag,
    message,
    aadOf(streamId, type),
    null,
    frame.nonce,
    subkeyOf(key),
  );
  if (fits) message.fill(0);
  return v2 + frame.bytes.toString('base64url', 0, length);
}

/** The clear JSON text of a sealed form (v2 or v1), or undefined when it does not open under this key (corrupt, or not ours). */
export function unsealText(key: Uint8Array, streamId: string, type: string, sealed: string): string | undefined {
  if (sealed.startsWith(v2)) return openV2(key, streamId, type, sealed);
  if (sealed.startsWith(v1)) return openV1(key, streamId, type, sealed);
  return undefined;
}

function openV2(key: Uint8Array, streamId: string, type: string, sealed: string): string | undefined {
  const encoded = sealed.slice(v2.length);
  // base64url decodes to at most 3 bytes per 4 characters.
  const fits = Math.ceil((encoded.length * 3) / 4) <= scratchBytes;
  const frame = fits ? scratchFrame : frameOf(Buffer.from(encoded, 'base64url'));
  const length = fits ? frame.bytes.write(encoded, 'base64url') : frame.bytes.length;
  if (length < head) return undefined;
  const clear = fits ? clearView(length - head) : Buffer.allocUnsafe(length - head);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
      clear,
      null,
      fits ? cipherView(length - head) : frame.bytes.subarray(head, length),
      frame.tag,
      aadOf(streamId, type),
      frame.nonce,
      subkeyOf(key),
    );
  } catch {
    return undefined;
  }
  const text = clear.toString('utf8');
  if (fits) clear.fill(0);
  return text;
}

function openV1(key: Uint8Array, streamId: string, type: string, sealed: string): string | undefined {
  const bytes = Buffer.from(sealed.slice(v1.length), 'base64url');
  if (bytes.length < v1IvBytes + tagBytes) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, v1IvBytes));
    decipher.setAAD(aadOf(streamId, type));
    decipher.setAuthTag(bytes.subarray(v1IvBytes, v1IvBytes + tagBytes));
    // GCM's final() only checks the tag and adds no bytes. Decoded once at the end: asking update() and
    // final() for text makes a string decoder per call (0.6 µs of the 4).
    const clear = decipher.update(bytes.subarray(v1IvBytes + tagBytes));
    decipher.final();
    return clear.toString('utf8');
  } catch {
    return undefined;
  }
}
