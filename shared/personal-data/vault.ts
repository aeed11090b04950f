import { createHmac, createSecretKey } from 'node:crypto';
import { sealText, unsealText } from './aead.js';
import type { DataKey, KeyStore } from './key-store.js';

/**
 * Crypto-shredding of the user events' personal fields. Events are stored with
 * their personal fields (name, email, previous email) sealed by an AEAD
 * (`aead.ts`: XChaCha20-Poly1305 now, AES-256-GCM in events sealed before it)
 * under the user's data key; the key id stands in clear beside the ciphertext.
 * Destroying a user's keys (`forget`) turns every sealed field of theirs into
 * noise while the log stays append-only.
 *
 * Stored form of a sealed event's data: `{ userId, occurredAt, keyId, sealed }`,
 * `sealed` the JSON of the personal fields sealed by `aead.ts` (authenticated
 * together with the stream id and event type, so a sealed payload cannot be
 * moved to another user or type).
 *
 * `open` is the way back, for every reader (command side, relay, embedded feed,
 * rebuild): a sealed event becomes its clear form; one whose key is gone becomes
 * `UserForgotten` (what it says is erased, and so is the person); a payload
 * without `sealed` (written before sealing existed) passes through unchanged.
 */
export const personalFields = {
  UserRegistered: ['name', 'email'],
  UserRenamed: ['name'],
  UserEmailChanged: ['email', 'previousEmail'],
} as const satisfies Record<string, readonly string[]>;

type PersonalType = keyof typeof personalFields;
const isPersonalType = (type: string): type is PersonalType => Object.hasOwn(personalFields, type);

interface SealedData {
  userId: string;
  occurredAt: string;
  keyId: string;
  sealed: string;
}

const isSealed = (data: unknown): data is SealedData => {
  if (typeof data !== 'object' || data === null) return false;
  const d = data as Record<string, unknown>;
  return typeof d.sealed === 'string' && typeof d.keyId === 'string' && typeof d.userId === 'string' && typeof d.occurredAt === 'string';
};

/** The key id that sealed this event, if it is sealed. */
const sealedKeyIdOf = (e: StoredEventLike): string | undefined => (isPersonalType(e.type) && isSealed(e.data) ? e.data.keyId : undefined);

/** The key ids that sealed these events, in order of first use. */
function sealedKeyIds(events: readonly StoredEventLike[]): string[] {
  const ids = new Set<string>();
  for (const e of events) {
    const id = sealedKeyIdOf(e);
    if (id !== undefined) ids.add(id);
  }
  return [...ids];
}

/** A stored UserForgotten names the keys it destroys (`keyIds`), for whoever finishes the job. */
const hasKeyIds = (data: unknown): data is { keyIds: unknown } & Record<string, unknown> =>
  typeof data === 'object' && data !== null && 'keyIds' in data;
const keyIdsNamedBy = (data: unknown): string[] =>
  hasKeyIds(data) && Array.isArray(data.keyIds) ? data.keyIds.filter((id): id is string => typeof id === 'string') : [];

/** The personal fields of a clear JSON text, or undefined when it is not an object (corrupt). */
function fieldsOf(clear: string | undefined): Record<string, unknown> | undefined {
  if (clear === undefined) return undefined;
  try {
    const fields: unknown = JSON.parse(clear);
    return typeof fields === 'object' && fields !== null && !Array.isArray(fields) ? (fields as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The event with another type and payload, everything else as it was. Fields a
 * store computes on first use (getters, e.g. `metadata` and `recordedAt` of the
 * embedded store's events) are read into the copy, which stays a plain object
 * (accessors defined per object would slow every later read of it).
 */
function withTypeAndData<T extends StoredEventLike>(event: T, type: string, data: unknown): T {
  // A plain object (a page parsed from JSON) is copied by V8's own fast path for a spread.
  if (Object.getPrototypeOf(event) === Object.prototype) return { ...event, type, data };
  const copy: Record<string, unknown> = {};
  Object.assign(copy, event);
  for (let proto: unknown = Object.getPrototypeOf(event); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const name of accessorsOf(proto)) if (!(name in copy)) copy[name] = (event as Record<string, unknown>)[name];
  }
  copy.type = type;
  copy.data = data;
  // The same fields as T, with `type` and `data` replaced.
  return copy as T;
}

/** The getter names a prototype defines, looked up once per prototype. */
const accessorNames = new WeakMap<object, string[]>();
function accessorsOf(proto: object): string[] {
  let names = accessorNames.get(proto);
  if (!names) {
    names = Object.entries(Object.getOwnPropertyDescriptors(proto)).flatMap(([name, d]) => (d.get ? [name] : []));
    accessorNames.set(proto, names);
  }
  return names;
}

/**
 * One event as readers need it (see `Vault.open`), its keys found: a stored
 * UserForgotten without the key ids it names, a sealed event opened (or read as
 * UserForgotten when its key is gone), anything else as it is.
 */
function openOne<T extends StoredEventLike>(e: T, keys: ReadonlyMap<string, Buffer | null> | undefined): T {
  if (e.type === 'UserForgotten') {
    if (!hasKeyIds(e.data)) return e;
    const { keyIds: _named, ...rest } = e.data;
    return withTypeAndData(e, e.type, rest);
  }
  if (!isPersonalType(e.type) || !isSealed(e.data)) return e;
  const stored = e.data;
  const key = keys?.get(stored.keyId);
  // The key is gone: so is everything this event said about the person.
  if (!key) return withTypeAndData(e, 'UserForgotten', { userId: stored.userId, occurredAt: stored.occurredAt });
  const fields = fieldsOf(unsealText(key, e.streamId, e.type, stored.sealed));
  // Does not open: left as stored, so the schema check calls it corrupt, the same way everywhere.
  if (!fields) return e;
  // The clear fields in the place of `keyId` and `sealed`, built in one pass (no rest and spread copies).
  const data: Record<string, unknown> = {};
  for (const name in stored) if (name !== 'keyId' && name !== 'sealed') data[name] = stored[name as keyof SealedData];
  for (const name in fields) data[name] = fields[name];
  return withTypeAndData(e, e.type, data);
}

/** What `open` and `seal` work on: a stored event's place, type and payload. */
export interface StoredEventLike {
  streamId: string;
  type: string;
  data: unknown;
}

export interface OpenOptions {
  /**
   * Also destroy the keys each UserForgotten among the events names (idempotent),
   * so a forget whose requester died between appending it and destroying the keys
   * is finished by the log's readers (the relay, the embedded projector).
   */
  finishForgets?: boolean;
  /**
   * false: keys read from the store for these events are not kept in memory. For a
   * read that meets each user once (a rebuild's stream-ordered pass): kept, a
   * million events' keys would only fill the memory, and the garbage collector
   * would walk them over and over (a tenth of such a rebuild's time).
   */
  keepKeys?: boolean;
}

export interface VaultOptions {
  keyStore: KeyStore;
  /** The keyed hash's secret (EMAIL_HASH_SECRET); the key store's own when absent. */
  emailHashSecret?: Buffer;
  /** How long a key read from the store is kept in memory (other processes learn of a forget by this). */
  cacheMs?: number;
  /** Keys (and known absences) kept in memory at most; the oldest eighth goes when it is full (default 100,000). */
  maxCachedKeys?: number;
  /** Keys made per trip to the store, ahead of need. */
  keysPerBatch?: number;
  clock?: () => number;
}

export interface Vault {
  /** The data payload to store for `event` of `streamId`: its personal fields sealed under `key`. */
  seal(streamId: string, event: { type: string; data: Record<string, unknown> }, key: DataKey): Record<string, unknown>;
  /**
   * The events as readers need them: sealed fields opened, erased events read as
   * UserForgotten, the key ids a stored UserForgotten names taken out. Order and
   * other fields kept. See `OpenOptions`.
   */
  open<T extends StoredEventLike>(events: readonly T[], options?: OpenOptions): Promise<T[]>;
  /** The key ids that sealed these events (a user's stream), in order of first use. */
  keyIdsOf(events: readonly StoredEventLike[]): string[];
  /** The key with this id, if it still exists. */
  key(id: string): Promise<DataKey | undefined>;
  /** A key for a user who has none yet: made ahead of time and already durable. */
  newKey(): Promise<DataKey>;
  /** Destroys the keys for good (and forgets them here). */
  destroy(ids: readonly string[]): Promise<void>;
  /** The keyed hash of an email address that names its reservation stream (hex). */
  readonly emailHash: (email: string) => string;
}

/** Opens the vault over a key store; reads the hash secret from it once when none is configured. */
export async function openVault(options: VaultOptions): Promise<Vault> {
  return createVault({ ...options, emailHashSecret: options.emailHashSecret ?? (await options.keyStore.secret()) });
}

/** The vault over a key store, with the hash secret at hand. */
export function createVault(options: VaultOptions & { emailHashSecret: Buffer }): Vault {
  const { keyStore } = options;
  const cacheMs = options.cacheMs ?? 60_000;
  const perBatch = options.keysPerBatch ?? 1024;
  const now = options.clock ?? Date.now;
  // A key object made once: a raw secret would be turned into one on every hash.
  const secret = createSecretKey(options.emailHashSecret);
  /** id -> key (or null: known to be gone) and when it was read. */
  const cache = new Map<string, { key: Buffer | null; at: number }>();
  const maxCached = Math.max(1, options.maxCachedKeys ?? 100_000);
  /**
   * Evicted together when the cache is full, oldest first, in one walk: a Map keeps a
   * deleted entry's slot until it grows or shrinks, so finding the oldest entry afresh
   * after each single delete walks every slot deleted before it (up to tens of
   * thousands per key, once a store has more users than the cache holds).
   */
  const evictedTogether = Math.ceil(maxCached / 8);
  let pool: DataKey[] = [];
  let refilling: Promise<void> | undefined;

  function remember(id: string, key: Buffer | null) {
    if (cache.size >= maxCached && !cache.has(id)) {
      let evicted = 0;
      for (const old of cache.keys()) {
        cache.delete(old);
        if (++evicted === evictedTogether) break;
      }
    }
    cache.set(id, { key, at: now() });
  }

  /** The keys of these ids, from memory or the store; `keep`: remember those read from the store. */
  async function keysFor(ids: Iterable<string>, keep = true): Promise<Map<string, Buffer | null>> {
    const found = new Map<string, Buffer | null>();
    const missing: string[] = [];
    const t = now();
    for (const id of ids) {
      if (found.has(id)) continue;
      const hit = cache.get(id);
      if (hit && t - hit.at < cacheMs) found.set(id, hit.key);
      else {
        found.set(id, null);
        missing.push(id);
      }
    }
    if (missing.length > 0) {
      const keys = await keyStore.get(missing);
      for (const id of missing) {
        const key = keys.get(id) ?? null;
        found.set(id, key);
        // A key destroyed while it was being read is not remembered as alive: this process forgets at once.
        const since = cache.get(id);
        if (keep && !(since && since.key === null && since.at >= t)) remember(id, key);
      }
    }
    return found;
  }

  async function destroy(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await keyStore.destroy(ids);
    // Forgotten here, not zeroed: a request running beside the forget may hold the same buffer and must
    // still open what it read (its write then conflicts with UserForgotten and meets a forgotten user).
    for (const id of ids) remember(id, null);
  }

  function refill(): Promise<void> {
    refilling ??= keyStore
      .create(perBatch)
      .then((keys) => {
        pool = pool.concat(keys);
        for (const k of keys) remember(k.id, k.key);
      })
      .finally(() => {
        refilling = undefined;
      });
    return refilling;
  }

  return {
    seal(streamId, event, key) {
      if (!isPersonalType(event.type)) return event.data;
      const fields: Record<string, unknown> = {};
      const rest: Record<string, unknown> = {};
      const names: readonly string[] = personalFields[event.type];
      for (const [name, value] of Object.entries(event.data)) (names.includes(name) ? fields : rest)[name] = value;
      return { ...rest, keyId: key.id, sealed: sealText(key.key, streamId, event.type, JSON.stringify(fields)) };
    },

    async open(events, options = {}) {
      // One pass for what the opening needs: the keys to find, the keys a UserForgotten names.
      let ids: Set<string> | undefined;
      let forgotten: string[] | undefined;
      for (const e of events) {
        if (e.type === 'UserForgotten') {
          if (hasKeyIds(e.data)) (forgotten ??= []).push(...keyIdsNamedBy(e.data));
          continue;
        }
        const id = sealedKeyIdOf(e);
        if (id !== undefined) (ids ??= new Set()).add(id);
      }
      if (ids === undefined && forgotten === undefined) return events.slice();
      const keys = ids === undefined ? undefined : await keysFor(ids, options.keepKeys ?? true);
      const opened = new Array<(typeof events)[number]>(events.length);
      for (let i = 0; i < events.length; i++) opened[i] = openOne(events[i]!, keys);
      if (options.finishForgets && forgotten !== undefined && forgotten.length > 0) await destroy(forgotten);
      return opened;
    },

    keyIdsOf: sealedKeyIds,

    async key(id) {
      const key = (await keysFor([id])).get(id);
      return key ? { id, key } : undefined;
    },

    async newKey() {
      while (pool.length === 0) await refill();
      const key = pool.shift()!;
      if (pool.length < perBatch / 4) void refill().catch(() => {});
      return key;
    },

    destroy,

    emailHash: (email) => createHmac('sha256', secret).update(email, 'utf8').digest('hex'),
  };
}
