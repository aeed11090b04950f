import { testVault } from './vault.js';
import type { Vault } from '../../shared/personal-data/vault.js';
import type { Knex } from 'knex';
import { userCommands, type UserCommands } from '../../command-side/user-commands.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { userRowFrom } from '../../projector/user-row.js';
import type { UserRow } from '../../shared/read-model/user-row.js';
import { classify } from '../../projector/classify.js';

export const commandsOver = (store: EventStore): UserCommands => userCommands({ store, vault: testVault, emailGraceMs: 60_000 });

/** Registers `count` users through the real command handler and gives them varied histories. */
export async function seedUsers(commands: UserCommands, count: number, tag = 'seed'): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const { id } = await commands.register({ name: `User ${tag} ${i}`, email: `u${i}.${tag}@example.org` });
    ids.push(id);
    if (i % 2 === 0) await commands.rename(id, `Renamed ${tag} ${i}`);
    if (i % 3 === 0) await commands.changeEmail(id, `changed${i}.${tag}@example.org`);
    if (i % 4 === 0) await commands.validate(id);
    if (i % 5 === 0) await commands.deactivate(id);
  }
  return ids;
}

/**
 * The read model as a pure fold of the whole log (opened): what USER_DATA must equal.
 * A stream's events stop at its first event the projector cannot apply (those
 * wait in quarantine), unless that event was skipped (`stream@revision`).
 */
export async function expectedRows(store: EventStore, options: { skipped?: ReadonlySet<string>; vault?: Pick<Vault, 'open'> } = {}): Promise<UserRow[]> {
  const vault = options.vault ?? testVault;
  const rows = new Map<string, UserRow>();
  const stopped = new Set<string>();
  for (let after: bigint | undefined; ; ) {
    const page = await store.readAll({ ...(after === undefined ? {} : { after }), maxCount: 1000 });
    // Opened as every reader opens them (under the tests' keys); an opened event passes through unchanged.
    for (const recorded of await vault.open(page)) {
      const c = classify(recorded);
      if (!c || stopped.has(c.streamId) || options.skipped?.has(`${c.streamId}@${c.revision}`)) continue;
      if (c.kind === 'poison') {
        stopped.add(c.streamId);
        continue;
      }
      const row = userRowFrom(rows.get(c.userId), c.event, recorded.revision);
      if (row) rows.set(row.ID_USER_DATA, row);
    }
    if (page.length < 1000) break;
    after = page[page.length - 1]!.position;
  }
  return [...rows.values()].sort((a, b) => a.ID_USER_DATA.localeCompare(b.ID_USER_DATA));
}

export async function tableRows(db: Knex, table = 'USER_DATA'): Promise<UserRow[]> {
  const rows = await db<UserRow>(table).select('*').orderBy('ID_USER_DATA');
  return rows.map((row) => ({ ...row, VERSION: Number(row.VERSION) }));
}

export async function waitFor(condition: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
