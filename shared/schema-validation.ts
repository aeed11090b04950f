import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ValidationError, type FieldProblem } from './errors.js';

// ajv-formats is published as CommonJS with a default export.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/** One ajv instance for the project's own boundaries (events, config, tokens). */
export const ajv = addFormats(new Ajv({ allErrors: true, strict: true, coerceTypes: false }));

export function fieldProblems(errors: readonly ErrorObject[] | null | undefined): FieldProblem[] {
  return (errors ?? []).map((e) => {
    const missing = e.keyword === 'required' ? (e.params as { missingProperty: string }).missingProperty : undefined;
    const extra =
      e.keyword === 'additionalProperties'
        ? (e.params as { additionalProperty: string }).additionalProperty
        : undefined;
    const path = e.instancePath.replace(/^\//, '').replaceAll('/', '.');
    const field = [path, missing ?? extra].filter(Boolean).join('.') || '(root)';
    return { field, message: extra ? 'is not allowed' : (e.message ?? 'is invalid') };
  });
}

/** Compiles a schema once and returns an assertion that throws a ValidationError. */
export function validatorFor<T>(schema: object, what: string): (value: unknown) => T {
  const validate = ajv.compile(schema);
  return (value: unknown): T => {
    if (!validate(value)) throw new ValidationError(`invalid ${what}`, fieldProblems(validate.errors));
    return value as T;
  };
}
