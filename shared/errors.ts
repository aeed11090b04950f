/**
 * The project's own errors. Adapters translate vendor errors into these at their
 * boundary; the HTTP layers map them to status codes; long-running workers use
 * `retriable` to choose between retrying with backoff and stopping loudly.
 */
/** What a route of either API can raise; `httpStatusOf` (shared/http.ts) maps each to its status. */
export type ApiErrorCode =
  | 'VALIDATION_FAILED'
  | 'USER_NOT_FOUND'
  | 'USER_ALREADY_EXISTS'
  | 'USER_DEACTIVATED'
  /** The person was forgotten (their personal data erased): 410 on both APIs. */
  | 'USER_FORGOTTEN'
  | 'EMAIL_TAKEN'
  | 'REVISION_CONFLICT'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'STORE_UNAVAILABLE'
  | 'CONSISTENCY_TIMEOUT'
  /** The `Consistency-Token`'s write is in the log, but its user's events wait in the projector's quarantine for an operator: 503 without Retry-After. */
  | 'WRITE_QUARANTINED'
  /** The instance is closing: a request arriving, or a read still waiting for its write (503, Retry-After, Connection: close). */
  | 'SHUTTING_DOWN'
  | 'INVALID_CONSISTENCY_TOKEN'
  | 'INVALID_CURSOR'
  /** A corrupt stored event: the command side answers 500. */
  | 'EVENT_INVALID';

/** Raised at start (a bad setting) or by the operator commands (which never create the stores they read). */
export type ProcessErrorCode = 'CONFIG_INVALID' | 'STORE_MISSING';

/** Raised by the projector and the rebuild, never by a route. */
export type ProjectionErrorCode = 'PROJECTION_PAUSED' | 'REBUILD_LOCKED' | 'REBUILD_LOCK_LOST' | 'REBUILD_ABORTED';

export type ErrorCode = ApiErrorCode | ProcessErrorCode | ProjectionErrorCode;

export interface FieldProblem {
  field: string;
  message: string;
}

export class ServiceError extends Error {
  override readonly name: string = 'ServiceError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retriable = false,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * A stored event that is not what its type says (unknown type, a payload that
 * fails its schema, a user event in another user's stream). Every side that
 * reads events raises this one error with the same message: the command side
 * answers 500, the projector and the rebuild park the event, the relay reports it.
 */
export class CorruptEventError extends ServiceError {
  override readonly name = 'CorruptEventError';
  constructor(
    readonly streamId: string,
    readonly revision: number,
    /** Why, without the event's place: what the quarantine records. */
    readonly reason: string,
  ) {
    super('EVENT_INVALID', `${streamId}@${revision}: ${reason}`);
  }
}

/** A command the current state forbids, e.g. renaming a deactivated user. */
export class DomainError extends ServiceError {
  override readonly name = 'DomainError';
}

/** Input that does not match a schema; lists every field that is wrong. */
export class ValidationError extends ServiceError {
  override readonly name = 'ValidationError';
  constructor(
    message: string,
    readonly problems: FieldProblem[],
  ) {
    super('VALIDATION_FAILED', message);
  }
}

/** The stream was not at the revision the caller expected. */
export class ConcurrencyError extends ServiceError {
  override readonly name = 'ConcurrencyError';
  constructor(
    readonly streamId: string,
    readonly expected: string,
    /** The stream's current revision, or -1 when it does not exist. */
    readonly actual: number,
    options?: ErrorOptions,
  ) {
    super(
      'REVISION_CONFLICT',
      `stream ${streamId} is at revision ${actual}, expected ${expected}`,
      false,
      options,
    );
  }
}

/** A backing store could not be reached or timed out; trying again later may work. */
export class StoreUnavailableError extends ServiceError {
  override readonly name = 'StoreUnavailableError';
  constructor(message: string, options?: ErrorOptions) {
    super('STORE_UNAVAILABLE', message, true, options);
  }
}

/**
 * A store that an operator command only reads is not there (a mistyped DATA_DIR,
 * file or database name): the command stops rather than create an empty one.
 */
export class StoreMissingError extends ServiceError {
  override readonly name = 'StoreMissingError';
  constructor(message: string) {
    super('STORE_MISSING', message);
  }
}

export class ConfigError extends ServiceError {
  override readonly name = 'ConfigError';
  constructor(readonly problems: FieldProblem[]) {
    super(
      'CONFIG_INVALID',
      `invalid configuration:\n${problems.map((p) => `  ${p.field}: ${p.message}`).join('\n')}`,
    );
  }
}
