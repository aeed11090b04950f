import { testVault } from './support/vault.js';
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { FastifyInstance, InjectOptions } from 'fastify';
import t, { type Test } from 'tap';
import { buildCommandApp } from '../command-side/app.js';
import { userCommands } from '../command-side/user-commands.js';
import { applyBatch } from '../projector/apply-batch.js';
import { buildQueryApp } from '../query-side/app.js';
import { inMemoryEventStore } from '../shared/event-store/in-memory-event-store.js';
import { readDbsUnderTest } from './support/read-dbs.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const repoFile = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');
const pkg = JSON.parse(repoFile('package.json')) as { name: string; version: string };

type Api = 'write' | 'read';
/** The README's ports: the write API on 3000, the read API on 3001. */
const apiOnPort: Record<string, Api> = { '3000': 'write', '3001': 'read' };

/** Routes the document leaves out on purpose: its own, and the Prometheus scrape. */
const leftOut = (url: string) => url === '/openapi.json' || url === '/docs' || url.startsWith('/docs/') || url === '/metrics';

async function buildApps(t: Test) {
  const store = inMemoryEventStore();
  const write = buildCommandApp({ commands: userCommands({ store, vault: testVault, emailGraceMs: 60_000 }), store });
  const { db } = await readDbsUnderTest[0]!.open(t);
  const read = buildQueryApp({ db, consistencyWaitMs: 2000 });
  t.teardown(() => Promise.all([write.close(), read.close()]));
  // What the projector does, at once: the read model catches up with the whole log.
  // The log's events opened, as the projector's feed hands them over (sealed, every one would be parked).
  const project = async () => void (await applyBatch(db, await testVault.open(await store.readAll({ maxCount: 100_000 })), new Map()));
  return { apps: { write, read } as Record<Api, FastifyInstance>, project };
}

/** Every route the app registered, as [METHOD, url], from Fastify's own route tree (HEAD routes are Fastify's automatic ones). */
function registeredRoutes(app: FastifyInstance): [string, string][] {
  const routes: [string, string][] = [];
  const prefixes: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^([│ ├└─]*?)[├└]── (.+?) \(([A-Z, ]+)\)$/.exec(line);
    if (!match) continue;
    const depth = match[1]!.length / 4;
    prefixes.length = depth;
    const url = prefixes.join('') + match[2]!;
    prefixes.push(url.slice(prefixes.join('').length));
    for (const method of match[3]!.split(', ')) if (method !== 'HEAD') routes.push([method, url]);
  }
  return routes;
}

interface Media {
  schema: object;
  example?: unknown;
}
interface Operation {
  parameters?: { in: string; name: string; schema: object; example?: unknown }[];
  requestBody?: { content: Record<string, Media> };
  responses: Record<string, { headers?: Record<string, unknown>; content?: Record<string, Media> }>;
}
interface OpenApi {
  openapi: string;
  info: { title: string; version: string; description?: string };
  paths: Record<string, Record<string, Operation>>;
}

const openApiOf = async (app: FastifyInstance) => (await app.inject({ url: '/openapi.json' })).json<OpenApi>();

/** The document's path template (`/users/{id}`) a concrete path falls under. */
function templateOf(doc: OpenApi, path: string): string | undefined {
  return Object.keys(doc.paths).find((template) =>
    new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path),
  );
}

/** A validator over one document: schemas are picked by JSON pointer, so its `$ref`s resolve inside it. */
function validatorOf(doc: OpenApi, api: Api) {
  const ajv = addFormats(new Ajv2020({ allErrors: true, strict: false, coerceTypes: false }));
  const coercing = addFormats(new Ajv2020({ allErrors: true, strict: false, coerceTypes: true }));
  ajv.addSchema(doc, api);
  const pointer = (...parts: string[]) => parts.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/');
  return {
    at: (...parts: string[]) => ajv.compile({ $ref: `${api}#/${pointer(...parts)}` }),
    /** Query and header values arrive as text: as Fastify does, they are coerced to the parameter's type. */
    parameter: (schema: object) => coercing.compile(schema),
  };
}

interface WalkthroughRequest {
  /** The comment above it in the README. */
  comment: string;
  api: Api;
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Record<string, string>;
  body?: string;
}

/** Splits a shell line into words and the operators `;` and `|`, honouring quotes. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === ' ' || c === ';' || c === '|') {
      if (word !== undefined) words.push(word);
      word = undefined;
      if (c !== ' ') words.push(c);
    } else word = (word ?? '') + c;
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** The curl commands of README.md's "## Walkthrough", in order. */
function walkthroughRequests(): WalkthroughRequest[] {
  const section = repoFile('README.md').split(/^## Walkthrough$/m)[1]!.split(/^## /m)[0]!;
  const script = /```sh\n([\s\S]*?)```/.exec(section)![1]!.replace(/\\\n\s*/g, ' ');
  const requests: WalkthroughRequest[] = [];
  let comment = '';
  for (const line of script.split('\n')) {
    if (line.startsWith('#')) comment = line;
    const commands: string[][] = [[]];
    for (const word of shellWords(line)) {
      if (word === ';') commands.push([]);
      else commands.at(-1)!.push(word);
    }
    for (const command of commands) {
      const piped = command.indexOf('|');
      const words = piped === -1 ? command : command.slice(0, piped);
      if (words[0] !== 'curl') continue;
      const request: Partial<WalkthroughRequest> & { headers: Record<string, string> } = { comment, headers: {} };
      for (let i = 1; i < words.length; i++) {
        const word = words[i]!;
        if (word === '-s') continue;
        else if (word === '-X') request.method = words[++i];
        else if (word === '-H') {
          const header = words[++i]!;
          const colon = header.indexOf(':');
          request.headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
        } else if (word === '-d') request.body = words[++i];
        else {
          const url = new URL(`http://${word}`);
          request.api = apiOnPort[url.port];
          request.path = url.pathname;
          request.query = url.searchParams;
        }
      }
      request.method ??= request.body === undefined ? 'GET' : 'POST';
      requests.push(request as WalkthroughRequest);
    }
  }
  return requests;
}

void t.test('both APIs serve an OpenAPI 3 document of every route they have', async (t) => {
  const { apps } = await buildApps(t);
  for (const [api, app] of Object.entries(apps)) {
    const answer = await app.inject({ url: '/openapi.json' });
    t.equal(answer.statusCode, 200, api);
    t.match(answer.headers['content-type'], /^application\/json/);
    const doc = answer.json<OpenApi>();
    t.match(doc.openapi, /^3\.\d+\.\d+$/, `${api}: OpenAPI 3`);
    t.equal(doc.info.version, pkg.version, 'version from package.json');
    t.match(doc.info.title, pkg.name, 'title from package.json');
    t.ok(doc.info.description, 'described');

    const routes = registeredRoutes(app);
    t.ok(routes.some(([, url]) => url === '/users'), `${api}: the route tree was read`);
    for (const [method, url] of routes) {
      const template = url.replace(/:(\w+)/g, '{$1}');
      if (leftOut(url)) {
        t.notOk(doc.paths[template], `${api}: ${url} is left out of the document`);
        continue;
      }
      const operation = doc.paths[template]?.[method.toLowerCase()];
      t.ok(operation, `${api}: ${method} ${url} is documented`);
      t.ok(Object.keys(operation?.responses ?? {}).length > 0, `${api}: ${method} ${url} has its answers`);
    }
  }
});

void t.test('every error answer is the ErrorBody, described, with Retry-After where it is sent', async (t) => {
  const { apps } = await buildApps(t);
  for (const [api, app] of Object.entries(apps)) {
    const doc = await openApiOf(app);
    for (const [path, operations] of Object.entries(doc.paths)) {
      if (path.startsWith('/health')) continue;
      for (const [method, operation] of Object.entries(operations)) {
        const statuses = Object.keys(operation.responses);
        t.ok(statuses.includes('400') && statuses.includes('429') && statuses.includes('503'), `${api}: ${method} ${path} documents 400, 429, 503`);
        t.ok(statuses.includes('401'), `${api}: ${method} ${path} documents 401 (bearer tokens)`);
        t.ok(operation.responses['401']?.headers?.['WWW-Authenticate'], `${api}: ${method} ${path}: its 401 says what it asks for`);
        if (method !== 'get') {
          // Every write parses a body that is sent, even a route that reads none.
          t.ok(statuses.includes('413') && statuses.includes('415'), `${api}: ${method} ${path} documents 413 and 415`);
        }
        for (const status of statuses.filter((s) => Number(s) >= 400)) {
          const response = operation.responses[status] as { description: string; content: Record<string, { schema: { $ref?: string } }> };
          t.equal(response.content['application/json']?.schema.$ref, '#/components/schemas/ErrorBody', `${api}: ${method} ${path} ${status}`);
          t.match(response.description, /`[A-Z_]+`/, `${api}: ${method} ${path} ${status} names its error codes`);
          if (status === '429' || status === '503') t.ok(operation.responses[status]!.headers?.['Retry-After'], 'Retry-After');
        }
      }
    }
  }
});

void t.test('POST /users documents the 410 a replayed Idempotency-Key gets once its user was forgotten', async (t) => {
  const { apps } = await buildApps(t);
  const doc = await openApiOf(apps.write);
  t.match(doc.paths['/users']!.post!.responses['410'], { description: /USER_FORGOTTEN/ });
});

void t.test('every example in the documents fits the schema it illustrates', async (t) => {
  const { apps } = await buildApps(t);
  let examples = 0;
  for (const [api, app] of Object.entries(apps) as [Api, FastifyInstance][]) {
    const doc = await openApiOf(app);
    const validator = validatorOf(doc, api);
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const media: [string[], Media | undefined][] = [
          [['requestBody', 'content', 'application/json'], operation.requestBody?.content['application/json']],
          ...Object.entries(operation.responses).map(([status, response]): [string[], Media | undefined] => [
            ['responses', status, 'content', 'application/json'],
            response.content?.['application/json'],
          ]),
        ];
        for (const [where, content] of media) {
          if (content?.example === undefined) continue;
          examples++;
          const valid = validator.at('paths', path, method, ...where, 'schema');
          t.ok(valid(content.example), `${api}: ${method} ${path} ${where.join(' ')}`, { errors: valid.errors });
        }
        for (const parameter of operation.parameters ?? []) {
          if (parameter.example === undefined) continue;
          examples++;
          t.ok(validator.parameter(parameter.schema)(parameter.example), `${api}: ${method} ${path} ${parameter.name}`);
        }
      }
    }
  }
  t.ok(examples >= 15, `the documents have examples (${examples})`);
});

void t.test("the README walkthrough's requests are documented, their bodies valid as documented", async (t) => {
  const { apps } = await buildApps(t);
  const docs = { write: await openApiOf(apps.write), read: await openApiOf(apps.read) };
  const requests = walkthroughRequests();
  t.ok(requests.length >= 10, `the walkthrough was read (${requests.length} requests)`);
  for (const request of requests) {
    const doc = docs[request.api];
    const name = `${request.method} ${request.api} ${request.path}`;
    const template = templateOf(doc, request.path);
    const operation = template ? doc.paths[template]![request.method.toLowerCase()] : undefined;
    if (!operation || !template) {
      t.fail(`${name} is not in the ${request.api} API's document`);
      continue;
    }
    const validator = validatorOf(doc, request.api);
    const parameters = operation.parameters ?? [];
    for (const [header, value] of Object.entries(request.headers)) {
      if (header === 'content-type') continue;
      const parameter = parameters.find((p) => p.in === 'header' && p.name.toLowerCase() === header);
      t.ok(parameter, `${name}: header ${header} is documented`);
      if (parameter) t.ok(validator.parameter(parameter.schema)(value.replace(/\$\w+/, 'user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001@0')), `${name}: ${header} is valid`);
    }
    for (const [key, value] of request.query) {
      const parameter = parameters.find((p) => p.in === 'query' && p.name === key);
      t.ok(parameter, `${name}: query ${key} is documented`);
      if (parameter) t.ok(validator.parameter(parameter.schema)(value), `${name}: ${key}=${value} is valid`);
    }
    if (request.body === undefined) {
      t.notOk(operation.requestBody, `${name} takes no body`);
      continue;
    }
    t.ok(operation.requestBody?.content['application/json'], `${name}: its JSON body is documented`);
    const valid = validator.at('paths', template, request.method.toLowerCase(), 'requestBody', 'content', 'application/json', 'schema');
    const rejected = /\b400\b/.test(request.comment);
    t.equal(valid(JSON.parse(request.body)), !rejected, `${name} ${request.body}: ${rejected ? 'invalid, as the README says' : 'valid'}`);
  }
});

void t.test('the README walkthrough, run: every answer is documented and matches its schema', async (t) => {
  const { apps, project } = await buildApps(t);
  const docs = { write: await openApiOf(apps.write), read: await openApiOf(apps.read) };
  const vars: Record<string, string> = {};
  const fill = (text: string) => text.replace(/\$(\w+)/g, (_, name: string) => vars[name] ?? `$${name}`);
  const requests = walkthroughRequests();
  for (const [i, request] of requests.entries()) {
    const path = fill(request.path);
    const answer = await apps[request.api].inject({
      method: request.method as InjectOptions['method'],
      url: `${path}${request.query.size > 0 ? `?${request.query.toString()}` : ''}`,
      headers: Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, fill(v)])),
      ...(request.body === undefined ? {} : { payload: request.body }),
    });
    if (request.api === 'write') await project();
    if (request.api === 'write' && answer.statusCode === 201) {
      vars.ID = answer.json<{ id: string }>().id;
      vars.TOKEN = answer.json<{ consistencyToken: string }>().consistencyToken;
    }
    const doc = docs[request.api];
    const name = `${request.method} ${request.api} ${path} -> ${answer.statusCode}`;
    const template = templateOf(doc, path)!;
    const method = request.method.toLowerCase();
    const documented = doc.paths[template]![method]!.responses[String(answer.statusCode)];
    t.ok(documented, `${name}: the status is documented`);
    if (!documented) continue;
    const body = validatorOf(doc, request.api).at('paths', template, method, 'responses', String(answer.statusCode), 'content', 'application/json', 'schema');
    t.ok(body(answer.json()), `${name}: the body matches`, { errors: body.errors });
    for (const header of Object.keys(documented.headers ?? {})) t.ok(answer.headers[header.toLowerCase()], `${name}: sends ${header}`);
    // A comment that names a status is the answer of its group's last request.
    const claimed = /\b([1-5]\d\d)\b/.exec(request.comment)?.[1];
    const lastOfGroup = requests[i + 1]?.comment !== request.comment;
    if (claimed && lastOfGroup) t.equal(String(answer.statusCode), claimed, `${name}: as the README says`);
    // The walkthrough runs on a healthy service: a 5xx the README does not name is a fault here, not a documented answer.
    if (!claimed) t.ok(answer.statusCode < 500, `${name}: no server error the README does not name`);
  }
  t.ok(vars.ID, 'the walkthrough registered a user');
});

void t.test('GET /docs is an HTML page whose own assets may load; the API stays locked down', async (t) => {
  const { apps } = await buildApps(t);
  for (const [api, app] of Object.entries(apps)) {
    const page = await app.inject({ url: '/docs' });
    t.equal(page.statusCode, 200, `${api}: /docs`);
    t.match(page.headers['content-type'], /^text\/html/);
    t.match(page.body, /<div id="swagger-ui">/);
    const policy = String(page.headers['content-security-policy']);
    t.match(policy, /script-src 'self'/, 'its scripts may load');
    t.match(policy, /style-src 'self'/, 'and its styles');
    t.notMatch(policy, /unsafe-inline|unsafe-eval|https?:/, 'nothing inline, nothing from elsewhere');
    t.match(policy, /frame-ancestors 'none'/);
    for (const asset of [/src="([^"]+swagger-ui-bundle\.js)"/, /href="([^"]+swagger-ui\.css)"/]) {
      const url = asset.exec(page.body)?.[1];
      const loaded = await app.inject({ url: url ?? '/missing' });
      t.equal(loaded.statusCode, 200, `${api}: ${url}`);
    }
    const spec = await app.inject({ url: '/docs/json' });
    t.same(spec.json(), (await app.inject({ url: '/openapi.json' })).json(), 'the page reads the same document');
    for (const url of ['/openapi.json', '/users', '/health']) {
      const answer = await app.inject({ url });
      t.equal(answer.headers['content-security-policy'], "default-src 'none';frame-ancestors 'none'", `${api}: ${url} keeps the strict policy`);
    }
  }
});

void t.test('the documentation needs no bearer token when the API does', async (t) => {
  const store = inMemoryEventStore();
  const write = buildCommandApp({ commands: userCommands({ store, vault: testVault, emailGraceMs: 60_000 }), store, writeApiTokens: ['secret'] });
  t.teardown(() => write.close());
  t.equal((await write.inject({ method: 'POST', url: '/users', payload: { name: 'A', email: 'a@example.org' } })).statusCode, 401);
  t.equal((await write.inject({ url: '/openapi.json' })).statusCode, 200);
  t.equal((await write.inject({ url: '/docs' })).statusCode, 200);
});
