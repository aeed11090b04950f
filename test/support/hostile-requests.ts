import type { InjectOptions } from 'fastify';
import { seededRandom } from './seeded-random.js';

/**
 * Malformed and adversarial requests, each invalid by construction (so a 2xx is
 * always a bug), generated from a seed so a failure can be replayed.
 */

export const hostileStrings = [
  "' OR '1'='1",
  "'; DROP TABLE USER_DATA; --",
  '" OR ""="',
  '\\',
  '%',
  '_',
  '%00',
  '\u0000',
  '\ud800',
  '\udfff',
  '\u202e\u0644\u0627',
  '\u200b\u200d\ufeff',
  'e\u0301\u0301\u0301',
  '\u2028\u2029',
  '😀'.repeat(300),
  'a'.repeat(5000),
  '../../etc/passwd',
  '<script>alert(1)</script>',
  '${jndi:ldap://x}',
  '{{7*7}}',
  '__proto__',
  'constructor',
  ' ',
  '',
  'null',
  'NaN',
];

/** Strings that are never valid email addresses (no @, or a broken domain). */
const badEmails = ["' OR 1=1 --", 'no-at-sign', 'a@', '@b.org', 'a@b', 'a@-b.org', 'a b@c.org', 'x@y..org', 'a@b.org\u0000', '😀@😀', ''];
const badIds = ['123', 'not-a-uuid', "1' OR '1'='1", '../..', '%2e%2e', '0190f2a4-6c1d-7cc2-9d6e', 'g'.repeat(36), '0190f2a4_6c1d_7cc2_9d6e_7d3b8a2f0c11'];
const wrongValues: unknown[] = [42, -1, 1e308, true, false, null, [], ['a@b.org'], {}, { $gt: '' }, { toString: 'x' }];
const brokenJson = ['{', '{"name":', '{"name":"a",}', "{'name':'a'}", '{"name":"a" "email":"b"}', 'NaN', '[1,2', '{"a":1}}', '\u0000', '{"name":"\\ud800"', '/* */{}'];
const wrongTypes = ['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', 'image/png'];

const pick = <T>(random: () => number, items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

/** Percent-encodes; a lone surrogate cannot be, so it goes out as the invalid UTF-8 it would be. */
function encode(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return '%ED%A0%80';
  }
}

/** A body that fails the write API's schemas whatever else the request says. */
function invalidBody(random: () => number, fields: readonly ('name' | 'email')[]): string {
  const base: Record<string, unknown> = Object.fromEntries(fields.map((f) => [f, f === 'email' ? 'ok@example.org' : 'Valid Name']));
  const field = pick(random, fields);
  switch (Math.floor(random() * 6)) {
    case 0:
      base[field] = pick(random, wrongValues);
      return JSON.stringify(base);
    case 1:
      delete base[field];
      return JSON.stringify({ ...base, [pick(random, hostileStrings) || 'x']: 'extra' });
    case 2:
      // Prototype pollution attempts: Fastify's parser rejects __proto__ and constructor.prototype.
      return JSON.stringify(base).replace(/}$/, pick(random, [',"__proto__":{"admin":true}}', ',"constructor":{"prototype":{"admin":true}}}']));
    case 3:
      if (fields.includes('email')) {
        base.email = pick(random, badEmails);
        if (field === 'name') base.name = pick(random, hostileStrings);
        return JSON.stringify(base);
      }
      base.name = pick(random, ['', '   ', 'x'.repeat(1025), '\u0000\u0001', 'a\u0007b']);
      return JSON.stringify(base);
    case 4:
      return pick(random, brokenJson);
    default:
      return JSON.stringify(pick(random, [[base], 'string', 17, null, true]));
  }
}

/** `count` hostile requests against the write API; `userId` is an existing user's id. */
export function hostileWrites(seed: number, count: number, userId: string): InjectOptions[] {
  const random = seededRandom(seed);
  const requests: InjectOptions[] = [];
  for (let i = 0; i < count; i++) {
    const route = Math.floor(random() * 5);
    const json = { 'content-type': 'application/json' };
    const mode = random();
    if (route === 0) {
      requests.push(
        mode < 0.15
          ? { method: 'POST', url: '/users', payload: JSON.stringify({ name: 'A', email: 'a@example.org' }), headers: { 'content-type': pick(random, wrongTypes) } }
          : mode < 0.2
            ? { method: 'POST', url: '/users', payload: JSON.stringify({ name: 'n'.repeat(20_000), email: 'a@example.org' }), headers: json }
            : mode < 0.25
              ? { method: 'POST', url: '/users', payload: JSON.stringify({ name: 'A', email: 'a@example.org' }), headers: { ...json, 'idempotency-key': pick(random, ['', 'a b', '\u00e9', 'k'.repeat(300)]) } }
              : { method: 'POST', url: '/users', payload: invalidBody(random, ['name', 'email']), headers: json },
      );
    } else if (route === 1 || route === 2) {
      const field = route === 1 ? 'name' : 'email';
      const badId = mode < 0.3;
      const id = badId ? encodeURIComponent(pick(random, badIds)) : userId;
      const headers: Record<string, string> = { ...json, ...(mode > 0.9 ? { 'if-match': pick(random, ['abc', '"-1"', '*', '"1e3"']) } : {}) };
      const payload = badId && random() < 0.5 ? JSON.stringify({ [field]: field === 'email' ? 'ok@example.org' : 'Fine' }) : invalidBody(random, [field]);
      requests.push({ method: 'PUT', url: `/users/${id}/${field}`, payload, headers });
    } else if (route === 3) {
      requests.push({ method: 'POST', url: `/users/${encodeURIComponent(pick(random, badIds))}/validation` });
    } else {
      requests.push(
        mode < 0.5
          ? { method: 'DELETE', url: `/users/${encodeURIComponent(pick(random, badIds))}` }
          : { method: 'DELETE', url: `/users/${userId}`, headers: { 'if-match': pick(random, ['abc', 'W/x', '"', '1.5']) } },
      );
    }
  }
  return requests;
}

/** `count` malformed requests against the read API. */
export function hostileReads(seed: number, count: number): InjectOptions[] {
  const random = seededRandom(seed);
  const requests: InjectOptions[] = [];
  for (let i = 0; i < count; i++) {
    const mode = Math.floor(random() * 6);
    const value = encode(pick(random, hostileStrings));
    if (mode === 0) requests.push({ method: 'GET', url: `/users/${encodeURIComponent(pick(random, badIds))}` });
    else if (mode === 1) requests.push({ method: 'GET', url: `/users?limit=${pick(random, ['0', '-1', '101', 'abc', '1e9', '', '%00'])}` });
    else if (mode === 2) requests.push({ method: 'GET', url: `/users?status=${value || 'x'}` });
    else if (mode === 3) requests.push({ method: 'GET', url: `/users?${pick(random, ['id', 'sort', 'where', '__proto__', 'email[$ne]', 'NAME'])}=${value}` });
    else if (mode === 4) requests.push({ method: 'GET', url: `/users?cursor=${pick(random, ['!!!', 'bm90LWFuLWlk', "' OR 1=1", '%00'])}` });
    else requests.push({ method: 'GET', url: '/users', headers: { 'consistency-token': pick(random, ['x', 'user-1@', '@1', "user-' OR 1=1@1", 'user-a@99999999999999999']) } });
  }
  return requests;
}
