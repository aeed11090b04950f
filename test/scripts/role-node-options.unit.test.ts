import { readFileSync } from 'node:fs';
import t from 'tap';
import { projectorAllocator, rebuildNodeOptions, roleEnvironment, roleNodeOptions } from '../../scripts/role-node-options.js';

/**
 * How each role's process starts (`scripts/role-node-options.ts`): its Node options
 * and its environment, the same wherever the role is started (`npm start`, the
 * `start:*` scripts, docker-compose.yml).
 */
const root = new URL('../../', import.meta.url);
const read = (file: string) => readFileSync(new URL(file, root), 'utf8');

void t.test('the projector gets the allocator settings; a tunable the environment sets comes after them, so it wins', async (t) => {
  t.equal(roleEnvironment('projector', {}).GLIBC_TUNABLES, projectorAllocator);
  t.equal(
    roleEnvironment('projector', { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=65536' }).GLIBC_TUNABLES,
    `${projectorAllocator}:glibc.malloc.mmap_threshold=65536`,
  );
  const env = { PATH: '/bin', GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' };
  t.equal(roleEnvironment('projector', env).PATH, '/bin', 'the rest of the environment kept');
  for (const role of ['command-side', 'query-side', 'relay']) t.same(roleEnvironment(role, env), env, `${role}: the environment as it is`);
});

void t.test("package.json's projector scripts and docker-compose.yml start the projector as npm start does", async (t) => {
  const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
  for (const name of ['start:projector', 'start:prod:projector']) {
    const script = scripts[name]!;
    t.ok(script.startsWith(`GLIBC_TUNABLES=${projectorAllocator}\${GLIBC_TUNABLES:+:$GLIBC_TUNABLES} `), `${name}: the allocator settings, then the environment's`);
    for (const option of roleNodeOptions.projector!) t.ok(script.includes(` ${option} `), `${name}: ${option}`);
  }
  const compose = read('docker-compose.yml');
  const projector = compose.slice(compose.indexOf('\n  projector:'), compose.indexOf('\n  query-side:'));
  t.match(projector, `GLIBC_TUNABLES: "${projectorAllocator}"`);
  for (const option of roleNodeOptions.projector!) t.match(projector, `"${option}"`);
});

void t.test("package.json's rebuild script and the README's production line start the rebuild with its options", async (t) => {
  const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
  const production = read('README.md').split('\n').find((line) => line.includes('dist/scripts/rebuild.js'));
  t.ok(production, "the README's production line");
  for (const option of rebuildNodeOptions) {
    t.ok(scripts.rebuild!.includes(` ${option} `), `npm run rebuild: ${option}`);
    t.ok(production?.includes(` ${option} `), `README: ${option}`);
  }
});

void t.test('docker-compose.yml starts every role after MariaDB is healthy: the read DB and the personal-data keys live there', async (t) => {
  const { parse } = await import('yaml');
  type Service = { build?: string; environment?: Record<string, string>; depends_on?: Record<string, { condition?: string }> };
  const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, Service> };
  const roles = Object.entries(compose.services).filter(([, service]) => service.build !== undefined);
  t.same(roles.map(([name]) => name).sort(), ['command-side', 'projector', 'query-side', 'relay'], 'the four roles');
  for (const [name, service] of roles) {
    t.match(service.environment?.READ_DB_URL, /^mysql:\/\/[^/]*@mariadb:/, `${name}: its read DB (and key store, without KEY_STORE_URL) on MariaDB`);
    t.notOk(service.environment?.KEY_STORE_URL, `${name}: no key store elsewhere`);
    t.equal(service.depends_on?.mariadb?.condition, 'service_healthy', `${name}: starts once MariaDB is healthy`);
  }
});
