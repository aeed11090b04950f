import { emailStreamIdOf } from '../../command-side/email-reservations.js';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import { createVault } from '../../shared/personal-data/vault.js';

/**
 * One key store and vault per test process: what the command side seals there,
 * the relay, the feeds and the rebuild of the same test can open.
 */
export const testKeyStore = inMemoryKeyStore();
export const testEmailHashSecret = Buffer.from('the tests email-hash secret, 32+ bytes long');
export const testVault = createVault({ keyStore: testKeyStore, emailHashSecret: testEmailHashSecret });

/** The reservation stream of an address under the tests' secret. */
export const testEmailStreamId = (email: string): string => emailStreamIdOf(testVault.emailHash(email));
