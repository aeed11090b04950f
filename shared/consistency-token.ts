import { ServiceError } from './errors.js';

/**
 * Names one write: the stream it went to and the revision it reached, e.g.
 * `user-0190f2a4-...@3`. A reader that presents it waits until the read model
 * holds that stream at that revision or later, which is exact whatever order
 * the projector applies different streams in.
 */
export interface ConsistencyToken {
  streamId: string;
  revision: number;
}

const tokenPattern = /^([A-Za-z0-9-]{1,200})@(\d{1,15})$/;

export const encodeConsistencyToken = ({ streamId, revision }: ConsistencyToken): string => `${streamId}@${revision}`;

export function decodeConsistencyToken(token: string): ConsistencyToken {
  const match = tokenPattern.exec(token.trim());
  if (!match) {
    throw new ServiceError(
      'INVALID_CONSISTENCY_TOKEN',
      'Consistency-Token must be a token returned by the write API, like user-<id>@<revision>',
    );
  }
  return { streamId: match[1]!, revision: Number(match[2]) };
}
