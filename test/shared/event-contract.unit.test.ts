import { testVault } from '../support/vault.js';
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import t from 'tap';
import { parse } from 'yaml';
import { messageOf } from '../../command-side/relay/relay.js';
import { eventContractSchema, eventContractText, eventSchemaFile } from '../../shared/event-contract.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { envelopeContentType, publicTypeOf } from '../../shared/public-events.js';
import { commandsOver } from '../support/seed.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const repoFile = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

// Both documents get the base URIs of their place in the repository, so the
// AsyncAPI document's relative `$ref`s resolve exactly as a tool reading the files would.
const schemaUri = `file:///repo/${eventSchemaFile}`;
const asyncApiUri = 'file:///repo/docs/events/asyncapi.yaml';
// The AsyncAPI document is read as plain data: its shape is what these tests check.
type Yaml = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const asyncApi = parse(repoFile('docs/events/asyncapi.yaml')) as Yaml;

function contractAjv() {
  const ajv = addFormats(new Ajv({ allErrors: true, strict: false }));
  ajv.addSchema(JSON.parse(repoFile(eventSchemaFile)) as object, schemaUri);
  ajv.addSchema(asyncApi, asyncApiUri);
  return ajv;
}

/** The messages the relay publishes for one user's whole life, through the real command handler. */
async function publishedMessages() {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const { id } = await commands.register({ name: 'Ada', email: 'ada@example.org' }, { correlationId: 'request-1' });
  await commands.rename(id, 'Ada L.');
  await commands.changeEmail(id, 'ada@lovelace.dev');
  await commands.validate(id);
  await commands.deactivate(id);
  // Read before she is forgotten, as a relay keeping up would publish them.
  const early = await testVault.open(await store.readAll({ maxCount: 1000 }));
  await commands.forget(id);
  // The relay publishes events opened: personal fields in clear until the person is forgotten.
  const events = [...early, ...(await testVault.open(await store.readAll({ maxCount: 1000 }))).slice(early.length)];
  return events.map(messageOf).filter((m) => m !== undefined);
}

void t.test(`${eventSchemaFile} is what the code's schemas produce`, async (t) => {
  t.equal(repoFile(eventSchemaFile), eventContractText(), 'differs from the code: run `npm run docs:events` and commit the file');
});

void t.test('every message the relay publishes matches the schema; a wrong one does not', async (t) => {
  const validate = contractAjv().compile({ $ref: schemaUri });
  const messages = await publishedMessages();
  t.same(
    messages.map((m) => m.headers['event-type']),
    Object.values(publicTypeOf),
    'one message of each public type',
  );
  for (const message of messages) {
    const value = JSON.parse(message.value) as { type: string; stream: string };
    t.ok(validate(value), `${value.type} is valid`, { errors: validate.errors });
    t.equal(message.key, value.stream, 'keyed by stream id');
  }
  const registered = JSON.parse(messages[0]!.value) as Record<string, unknown>;
  t.notOk(validate({ ...registered, type: 'user.renamed.v1' }), 'data is held to the schema of its type');
  t.notOk(validate({ ...registered, type: 'user.archived.v1' }), 'unknown types are not in the contract');
  t.notOk(validate({ ...registered, data: { ...(registered.data as object), email: 'not an address' } }), 'formats are checked');
  t.ok(eventContractSchema().definitions['user.registered.v1.data'], 'the data of each type is its own definition');
});

void t.test('asyncapi.yaml: one message per public type, its headers and payload as the relay sends them', async (t) => {
  t.match(asyncApi.asyncapi, /^3\.0\.\d+$/);
  const channel = asyncApi.channels.usersEvents;
  t.equal(channel.address, 'users.events.v1');
  const messages = Object.values<Yaml>(asyncApi.components.messages);
  t.same(messages.map((m) => m.name).sort(), Object.values(publicTypeOf).sort(), 'one message per public type, named by it');
  t.equal(Object.keys(channel.messages).length, messages.length, 'the channel carries every message');
  t.equal(asyncApi.defaultContentType, envelopeContentType);
  t.equal(asyncApi.components.schemas.headers.properties['content-type'].const, envelopeContentType);

  const ajv = contractAjv();
  const published = await publishedMessages();
  for (const [key, message] of Object.entries<Yaml>(asyncApi.components.messages)) {
    const type = message.name as string;
    t.equal(message.payload.$ref, `./users.events.v1.schema.json#/definitions/${type}`, `${type}: payload is the schema file's envelope of this type`);
    const payload = ajv.compile({ $ref: `${asyncApiUri}#/components/messages/${key}/payload` });
    const headers = ajv.compile({ $ref: `${asyncApiUri}#/components/messages/${key}/headers` });
    for (const example of message.examples as { headers: object; payload: object }[]) {
      t.ok(payload(example.payload), `${type}: the example payload is valid`, { errors: payload.errors });
      t.ok(headers(example.headers), `${type}: the example headers are valid`, { errors: headers.errors });
    }
    const sent = published.find((m) => m.headers['event-type'] === type)!;
    t.ok(payload(JSON.parse(sent.value)), `${type}: what the relay sends fits the payload`);
    t.ok(headers(sent.headers), `${type}: and its headers`, { errors: headers.errors });
    const other = published.find((m) => m.headers['event-type'] !== type)!;
    t.notOk(payload(JSON.parse(other.value)), `${type}: another type's message does not`);
    t.notOk(headers(other.headers), `${type}: nor do its headers`);
  }
});

void t.test('asyncapi.yaml: every local $ref points at something', async (t) => {
  const refs: string[] = [];
  const collect = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(collect);
    else if (node && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if (key === '$ref' && typeof value === 'string') refs.push(value);
        else collect(value);
      }
    }
  };
  collect(asyncApi);
  const local = refs.filter((ref) => ref.startsWith('#/'));
  t.ok(local.length > 10, 'the document refers within itself');
  for (const ref of local) {
    const target = ref
      .slice(2)
      .split('/')
      .reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part.replaceAll('~1', '/').replaceAll('~0', '~')], asyncApi);
    t.ok(target, ref);
  }
  t.same(
    refs.filter((ref) => !ref.startsWith('#/')).map((ref) => ref.split('#')[0]),
    Object.values(publicTypeOf).map(() => './users.events.v1.schema.json'),
    'the only other document referred to is the schema file',
  );
});
