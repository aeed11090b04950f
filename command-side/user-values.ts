import { ValidationError } from '../shared/errors.js';
import { ajv } from '../shared/schema-validation.js';

const isEmail = ajv.compile({ type: 'string', format: 'email', maxLength: 254 });
// Control characters make names unprintable and break logs; nobody's name has them.
const controlCharacters = /\p{Cc}/u;
// Under the u flag a surrogate pair is one code point: only a lone surrogate is Cs.
const loneSurrogates = /\p{Cs}/u;

/** Trims a name and checks it is 1..255 characters (code points) of printable text. */
export function normaliseName(raw: string, field = 'name'): string {
  const name = raw.trim();
  const length = [...name].length;
  if (length < 1 || length > 255) {
    throw new ValidationError('invalid name', [{ field, message: 'must be 1 to 255 characters after trimming' }]);
  }
  if (controlCharacters.test(name)) {
    throw new ValidationError('invalid name', [{ field, message: 'must not contain control characters' }]);
  }
  // A lone surrogate (`"\ud800"` in pure-ASCII JSON) is no character: UTF-8 cannot carry it, so the
  // read DB and the answers would turn it into U+FFFD and the name would change for good.
  if (loneSurrogates.test(name)) {
    throw new ValidationError('invalid name', [{ field, message: 'must be well-formed Unicode (no lone surrogates)' }]);
  }
  return name;
}

/**
 * Trims and lower-cases an email address and checks its form. Lower-casing the
 * whole address is what users expect (Alice@X.org and alice@x.org are one person),
 * and it is what makes the uniqueness check meaningful.
 */
export function normaliseEmail(raw: string, field = 'email'): string {
  const email = raw.trim().toLowerCase();
  if (!isEmail(email)) {
    throw new ValidationError('invalid email', [{ field, message: 'must be a valid email address' }]);
  }
  return email;
}
