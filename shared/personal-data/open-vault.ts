import type { Config } from '../config.js';
import { requireExistingFile } from '../store-files.js';
import type { KeyStore } from './key-store.js';
import { openMariaDbKeyStore } from './mariadb-key-store.js';
import { sqliteKeyStoreThread } from './sqlite-key-store-thread.js';
import { openVault, type Vault } from './vault.js';

/**
 * The key store the configuration names (KEY_STORE_URL, or beside the read DB)
 * and the vault over it. `create: false` (operator commands) refuses a missing
 * key store (file or database) instead of making an empty one, which would read
 * every sealed event as forgotten.
 */
export async function openConfiguredVault(
  config: Pick<Config, 'keyStore' | 'emailHashSecret' | 'keyCacheMs'>,
  options: { create?: boolean } = {},
): Promise<{ vault: Vault; keyStore: KeyStore }> {
  const { keyStore: where } = config;
  if (where.client === 'sqlite' && options.create === false) {
    requireExistingFile(where.file, 'embedded key store', 'DATA_DIR or KEY_STORE_URL');
  }
  const keyStore =
    where.client === 'sqlite' ? sqliteKeyStoreThread(where.file) : await openMariaDbKeyStore(where.url, { create: options.create ?? true });
  try {
    const vault = await openVault({
      keyStore,
      cacheMs: config.keyCacheMs,
      ...(config.emailHashSecret ? { emailHashSecret: Buffer.from(config.emailHashSecret, 'utf8') } : {}),
    });
    return { vault, keyStore };
  } catch (error) {
    await keyStore.close().catch(() => {});
    throw error;
  }
}
