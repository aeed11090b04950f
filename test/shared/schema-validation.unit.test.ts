import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import t from 'tap';
import { ajv } from '../../shared/schema-validation.js';
import { seededRandom } from '../support/seeded-random.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

// The reference: ajv-formats' own full `date-time` check, untouched.
const reference = addFormats(new Ajv()).compile({ type: 'string', format: 'date-time' });
const ours = ajv.compile({ type: 'string', format: 'date-time' });

const pad = (n: number, width: number) => String(n).padStart(width, '0');

void t.test('date-time: the same verdict as ajv-formats full mode on edge cases', async (t) => {
  const cases = [
    '2025-01-01T00:00:00.000Z',
    '2024-02-29T23:59:59.999Z', // leap year
    '2025-02-29T10:00:00.000Z', // not a leap year
    '2000-02-29T10:00:00.000Z', // divisible by 400
    '1900-02-29T10:00:00.000Z', // divisible by 100 only
    '2025-04-31T00:00:00.000Z',
    '2025-13-01T00:00:00.000Z',
    '2025-00-10T00:00:00.000Z',
    '2025-01-00T00:00:00.000Z',
    '2025-12-31T24:00:00.000Z',
    '2025-01-01T00:60:00.000Z',
    '2016-12-31T23:59:60.000Z', // leap second: the full check's own rule
    '2016-12-31T22:59:60.000Z',
    '2025-01-01t00:00:00Z',
    '2025-01-01 00:00:00Z',
    '2025-01-01T00:00:00+01:00',
    '2025-01-01T00:00:00.123456Z',
    '2025-01-01T00:00:00',
    '2025-01-01',
    '2025-01-01T00:00:00.000ZZ',
    '２０２５-01-01T00:00:00.000Z',
    '',
  ];
  for (const value of cases) t.equal(ours(value), reference(value), value);
});

void t.test('date-time: the same verdict as ajv-formats full mode on 20,000 generated instants', async (t) => {
  const random = seededRandom(20261122);
  const int = (max: number) => Math.floor(random() * max);
  let valid = 0;
  let disagreements = 0;
  for (let i = 0; i < 20_000; i++) {
    // Mostly the canonical shape with fields a little out of range, sometimes another form.
    const date = `${pad(1896 + int(210), 4)}-${pad(int(14), 2)}-${pad(int(33), 2)}`;
    const time = `${pad(int(26), 2)}:${pad(int(62), 2)}:${pad(int(62), 2)}`;
    const tail = random() < 0.8 ? `.${pad(int(1000), 3)}Z` : (['Z', '+02:00', '-0130', '.5Z', ''] as const)[int(5)]!;
    const value = `${date}${random() < 0.95 ? 'T' : 't'}${time}${tail}`;
    const verdict = ours(value);
    if (verdict !== reference(value)) {
      disagreements += 1;
      t.fail(`${value}: ours ${verdict}, ajv-formats ${!verdict}`);
    }
    if (verdict) valid += 1;
  }
  t.equal(disagreements, 0, 'no disagreement');
  // Both outcomes are well represented, so the comparison means something.
  t.ok(valid > 4000 && valid < 16_000, `${valid} of 20,000 valid`);
});

void t.test('uuid: the same verdict as ajv-formats (but for its urn:uuid: form, which no id has), whatever came before', async (t) => {
  const referenceUuid = addFormats(new Ajv()).compile({ type: 'string', format: 'uuid' });
  const oursUuid = ajv.compile({ type: 'string', format: 'uuid' });
  // Before any uuid was accepted: the memory starts empty, not as a string that could match.
  t.equal(oursUuid(''), false, 'the empty string, checked first');
  const valid = '0194e8d4-a510-7000-8000-0000000000a1';
  const cases = [
    valid,
    valid, // the one last accepted
    `${valid} `,
    valid.toUpperCase(),
    `urn:uuid:${valid}`,
    valid.slice(0, -1),
    '',
    valid,
    '0194e8d4-a510-7000-8000-0000000000g1',
    '0194e8d4a5107000800000000000000a1',
    valid,
    `${valid}\n`,
  ];
  // In this order each invalid value follows an accepted one: the check must not answer from memory.
  for (const value of cases) t.equal(oursUuid(value), !value.startsWith('urn:') && referenceUuid(value), JSON.stringify(value));
});
