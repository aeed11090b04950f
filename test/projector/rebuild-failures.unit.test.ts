import t from 'tap';
import { failureOfRun, KeysMissingError, RebuildAbortedError, RebuildLockLostError } from '../../projector/rebuild.js';
import { SwapUnfinishedError } from '../../projector/shadow-table.js';

/** What a rebuild that failed says to its operator, when it had been asked to stop meanwhile and when not. */
void t.test('a failure after Ctrl-C reads as an interruption only when nothing says the live table changed', async (t) => {
  const stopped = AbortSignal.abort();
  const running = new AbortController().signal;
  const unreachable = new Error('connection lost');
  const swapped = new SwapUnfinishedError(new Error('connection lost after the rename'));

  t.equal(failureOfRun(unreachable, running), unreachable, 'not asked to stop: the error as it is');
  t.equal(failureOfRun(swapped, running), swapped);
  t.type(failureOfRun(unreachable, stopped), RebuildAbortedError, 'asked to stop: an error on the way out is the interruption');
  t.equal(failureOfRun(swapped, stopped), swapped, 'but a swap that happened is not reported as "the live table was left as it was"');
  t.match(String((failureOfRun(swapped, stopped) as Error).message), /^the rebuilt table was swapped in/);
  const refused = new KeysMissingError(2, 'user-x');
  t.equal(failureOfRun(refused, stopped), refused, 'nor a refusal that says why');
  const lockLost = new RebuildLockLostError();
  t.equal(failureOfRun(lockLost, stopped), lockLost, "nor the service's own errors");
});
