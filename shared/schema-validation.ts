import { Ajv, type ErrorObject, type Format } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ValidationError, type FieldProblem } from './errors.js';

// ajv-formats is published as CommonJS with a default export.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/** A string format's check, as ajv-formats registered it. */
function formatCheck(ajv: Ajv, name: string): (value: string) => boolean {
  const format = ajv.formats[name] as Format | undefined;
  const check = typeof format === 'object' && !(format instanceof RegExp) ? format.validate : format;
  if (typeof check === 'function') return check as (value: string) => boolean;
  if (check instanceof RegExp) return (value) => check.test(value);
  throw new Error(`no string format ${name}`);
}

/**
 * The instant every event carries (`Date.prototype.toISOString()`: UTC, milliseconds), with the
 * time of day pinned to 00:00:00.000-23:59:59.999, which ajv-formats' full check accepts for any
 * valid date. A leap second (23:59:60) does not match and gets the full check.
 */
const utcMillisInstant = /^\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$/;
const knownDaysLimit = 4096;

/**
 * ajv-formats' full `date-time` check, with the same verdicts but cheaper on the form events
 * carry: the time of day is checked by one regex and the calendar date by ajv-formats' own
 * `date` check, once per distinct day. A rebuild checks millions of instants (ajv-formats
 * splits and re-parses each: a third of the rebuild's schema checks), most of them on few days.
 */
function withFastInstants(ajv: Ajv): Ajv {
  const fullDateTime = formatCheck(ajv, 'date-time');
  const fullDate = formatCheck(ajv, 'date');
  /** Verdicts by day as the number yyyymmdd, read off the digits: a check allocates nothing on a day seen before. */
  const days = new Map<number, boolean>();
  const digits = (value: string, from: number, to: number) => {
    let n = 0;
    for (let i = from; i < to; i++) n = n * 10 + value.charCodeAt(i) - 48;
    return n;
  };
  const validDay = (value: string): boolean => {
    const day = digits(value, 0, 4) * 10_000 + digits(value, 5, 7) * 100 + digits(value, 8, 10);
    let valid = days.get(day);
    if (valid === undefined) {
      if (days.size >= knownDaysLimit) days.clear();
      days.set(day, (valid = fullDate(value.slice(0, 10))));
    }
    return valid;
  };
  const validate = (value: string): boolean => (utcMillisInstant.test(value) ? validDay(value) : fullDateTime(value));
  return ajv.addFormat('date-time', { type: 'string', validate });
}

/**
 * A UUID as the service writes and reads it: 8-4-4-4-12 hex digits, either case.
 * ajv-formats' `uuid` also takes a `urn:uuid:` prefix, which no id of this service
 * has: `/users/urn:uuid:<id>` was a 404 for a user that exists, not a 400.
 */
export const uuidPattern = /^[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i;

/** `uuid` as `uuidPattern`, for the ajv instances of the HTTP schemas. */
export const withPlainUuids = (ajv: Ajv): Ajv => ajv.addFormat('uuid', uuidPattern);

/**
 * The `uuid` check (`uuidPattern`), passed over when the value is the one it last
 * accepted. A user's events come together in a rebuild's stream-ordered read and
 * in a batch, all of them naming the same user: the regex ran once per event
 * (0.17 s of a 1,000,000-event rebuild's fold thread in a profile).
 */
function withRepeatedUuids(ajv: Ajv): Ajv {
  let lastValid: string | undefined;
  const validate = (value: string): boolean => {
    if (value === lastValid) return true;
    if (!uuidPattern.test(value)) return false;
    lastValid = value;
    return true;
  };
  return ajv.addFormat('uuid', { type: 'string', validate });
}

/** One ajv instance for the project's own boundaries (events, config, tokens). */
export const ajv = withRepeatedUuids(withFastInstants(addFormats(new Ajv({ allErrors: true, strict: true, coerceTypes: false }))));

export function fieldProblems(errors: readonly ErrorObject[] | null | undefined): FieldProblem[] {
  return (errors ?? []).map((e) => {
    const missing = e.keyword === 'required' ? (e.params as { missingProperty: string }).missingProperty : undefined;
    const extra =
      e.keyword === 'additionalProperties'
        ? (e.params as { additionalProperty: string }).additionalProperty
        : undefined;
    const path = e.instancePath.replace(/^\//, '').replaceAll('/', '.');
    const field = [path, missing ?? extra].filter(Boolean).join('.') || '(root)';
    return { field, message: extra ? 'is not allowed' : e.keyword === 'enum' ? oneOf(e.params) : (e.message ?? 'is invalid') };
  });
}

/** ajv says "must be equal to one of the allowed values"; the caller needs to know which. */
function oneOf(params: unknown): string {
  const allowed = (params as { allowedValues?: unknown }).allowedValues;
  if (!Array.isArray(allowed)) return 'must be one of the allowed values';
  return `must be one of: ${allowed.map((value) => (typeof value === 'string' ? value : JSON.stringify(value))).join(', ')}`;
}

/** Compiles a schema once and returns an assertion that throws a ValidationError. */
export function validatorFor<T>(schema: object, what: string): (value: unknown) => T {
  const validate = ajv.compile(schema);
  return (value: unknown): T => {
    if (!validate(value)) throw new ValidationError(`invalid ${what}`, fieldProblems(validate.errors));
    return value as T;
  };
}
