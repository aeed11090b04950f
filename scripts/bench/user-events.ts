/**
 * The event of `kind` (0 registered, 1 renamed, 2 email changed, 3 validated, 4
 * deactivated) at `revision` of user number `user`'s stream, as the benchmarks
 * seed them (`bench:rebuild`, `bench:open`): names and addresses that differ by user
 * and revision, so every sealed payload is its own.
 */
export function benchUserEvent(kind: number, user: number, userId: string, revision: number, occurredAt: string): { type: string; data: Record<string, unknown> } {
  switch (kind) {
    case 0:
      return { type: 'UserRegistered', data: { userId, name: `User ${user}`, email: `user${user}@bench.example.org`, occurredAt } };
    case 1:
      return { type: 'UserRenamed', data: { userId, name: `User ${user} r${revision}`, occurredAt } };
    case 2:
      return {
        type: 'UserEmailChanged',
        data: { userId, email: `user${user}.${revision}@bench.example.org`, previousEmail: `user${user}@bench.example.org`, occurredAt },
      };
    case 3:
      return { type: 'UserValidated', data: { userId, occurredAt } };
    default:
      return { type: 'UserDeactivated', data: { userId, occurredAt } };
  }
}
