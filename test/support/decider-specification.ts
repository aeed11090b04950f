import type { Test } from 'tap';

/**
 * Given / When / Then for a pure decider:
 * `spec(t).given([events]).when(command).then([events])` or `.thenThrows(match)`.
 */
export function deciderSpecification<Command, Event, State>(decider: {
  decide(command: Command, state: State): Event[];
  evolve(state: State, event: Event): State;
  initialState(): State;
}) {
  return (t: Test) => ({
    given(events: Event[]) {
      return {
        when(command: Command) {
          const run = () => decider.decide(command, events.reduce(decider.evolve, decider.initialState()));
          return {
            then(expected: Event[]) {
              t.same(run(), expected);
            },
            thenThrows(expected: { code: string; name?: string }) {
              t.throws(run, expected);
            },
          };
        },
      };
    },
  });
}
