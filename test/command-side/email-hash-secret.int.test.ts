import t from 'tap';
import { checkEmailHashSecret, secretFingerprintStream } from '../../command-side/email-reservations.js';
import { userCommands } from '../../command-side/user-commands.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import { createVault } from '../../shared/personal-data/vault.js';

/**
 * Command sides that name reservations with different secrets would each look for an
 * address under their own name for it, and two users could register one address. The
 * first command side records which secret it uses; another one is refused.
 */
const vaultWith = (secret: string) => createVault({ keyStore: inMemoryKeyStore(), emailHashSecret: Buffer.from(secret) });
const secretA = 'the first command side secret, 32+ bytes';
const secretB = 'a different secret, also 32 bytes long..';

void t.test('a command side with another secret registers no one, and says which setting is wrong', async (t) => {
  const store = inMemoryEventStore();
  const first = userCommands({ store, vault: vaultWith(secretA), emailGraceMs: 60_000 });
  await first.register({ name: 'Ada', email: 'ada@example.org' });
  const recorded = await store.readStream(secretFingerprintStream);
  t.equal(recorded.length, 1, 'the first registration recorded the secret');
  t.notOk(JSON.stringify(recorded[0]!.data).includes(secretA), 'by a keyed hash, not the secret itself');

  const second = userCommands({ store, vault: vaultWith(secretB), emailGraceMs: 60_000 });
  const before = (await store.readAll({ maxCount: 1000 })).length;
  await t.rejects(second.register({ name: 'Impostor', email: 'ada@example.org' }), {
    name: 'ConfigError',
    problems: [{ field: 'EMAIL_HASH_SECRET', message: /differs from the secret the event store's email reservations were made with/ }],
  });
  t.equal((await store.readAll({ maxCount: 1000 })).length, before, 'nothing appended');

  const again = userCommands({ store, vault: vaultWith(secretA), emailGraceMs: 60_000 });
  await t.rejects(again.register({ name: 'Impostor', email: 'ada@example.org' }), { code: 'EMAIL_TAKEN' }, 'the same secret finds the address taken');
  await t.resolves(checkEmailHashSecret(store, vaultWith(secretA).emailHash));
  await t.rejects(checkEmailHashSecret(store, vaultWith(secretB).emailHash), { name: 'ConfigError' });
});

void t.test('command sides starting together on an empty store agree on one record', async (t) => {
  const store = inMemoryEventStore();
  const hash = vaultWith(secretA).emailHash;
  await Promise.all([checkEmailHashSecret(store, hash), checkEmailHashSecret(store, hash), checkEmailHashSecret(store, hash)]);
  t.equal((await store.readStream(secretFingerprintStream)).length, 1);
});

void t.test('after a key store was lost with its secret, EMAIL_HASH_SECRET_RECORD=replace records the new one', async (t) => {
  const store = inMemoryEventStore();
  await userCommands({ store, vault: vaultWith(secretA), emailGraceMs: 60_000 }).register({ name: 'Ada', email: 'ada@example.org' });
  const hashB = vaultWith(secretB).emailHash;
  await t.rejects(checkEmailHashSecret(store, hashB), { name: 'ConfigError', message: /EMAIL_HASH_SECRET_RECORD=replace/ }, 'the refusal names the way out');
  await t.resolves(checkEmailHashSecret(store, hashB, { replace: true }));
  t.equal((await store.readStream(secretFingerprintStream)).length, 2, 'recorded after the first, which the log keeps');
  await t.resolves(userCommands({ store, vault: vaultWith(secretB), emailGraceMs: 60_000 }).register({ name: 'Bea', email: 'bea@example.org' }));
  await t.rejects(checkEmailHashSecret(store, vaultWith(secretA).emailHash), { name: 'ConfigError' }, 'the secret before is refused from now on');
  await t.resolves(checkEmailHashSecret(store, hashB, { replace: true }), 'replacing with the recorded secret changes nothing');
  t.equal((await store.readStream(secretFingerprintStream)).length, 2);
});
