import { Worker } from 'node:worker_threads';
import t, { type Test } from 'tap';
import { StoreUnavailableError } from '../../shared/errors.js';
import { threadCalls } from '../../shared/thread-calls.js';

/**
 * A thread that answers as `answerCalls` does: `echo` with its value, `outage`
 * with a StoreUnavailableError, `fail` with another error, `exit` by exiting
 * without an answer, `hang` never.
 */
const source = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (request) => {
  const reply = (body) => parentPort.postMessage({ id: request.id, ...body });
  if (request.kind === 'echo') reply({ result: request.value });
  if (request.kind === 'outage') reply({ error: { name: 'StoreUnavailableError', message: 'the store is down' } });
  if (request.kind === 'fail') reply({ error: { name: 'Error', message: 'too large', code: 'E_SIZE' } });
  if (request.kind === 'exit') process.exit(3);
});
`;

type Call = { kind: 'echo'; value: unknown } | { kind: 'outage' | 'fail' | 'exit' | 'hang' };

function started(t: Test, threads: Worker[] = []) {
  const thread = threadCalls<Call, unknown>(
    () => {
      const worker = new Worker(source, { eval: true });
      threads.push(worker);
      return worker;
    },
    (reason, cause) => new Error(`test thread: ${reason}`, cause ? { cause } : {}),
  );
  t.teardown(() => thread.terminate());
  return thread;
}

void t.test('each call settles with its own answer, also when several are pending', async (t) => {
  const thread = started(t);
  const answers = await Promise.all([1, 2, 3].map((value) => thread.call({ kind: 'echo', value: { value } })));
  t.same(answers, [{ value: 1 }, { value: 2 }, { value: 3 }]);
});

void t.test('an outage stays an outage across the thread; other errors keep their message and code', async (t) => {
  const thread = started(t);
  const outage = await thread.call({ kind: 'outage' }).catch((error: unknown) => error);
  t.ok(outage instanceof StoreUnavailableError, 'StoreUnavailableError (retriable)');
  t.equal((outage as Error).message, 'the store is down');
  const other = await thread.call({ kind: 'fail' }).catch((error: unknown) => error);
  t.notOk(other instanceof StoreUnavailableError, 'not an outage');
  t.match(other, { message: 'too large', code: 'E_SIZE' });
});

void t.test('a thread that exits fails the calls pending; the next call starts a new thread', async (t) => {
  const threads: Worker[] = [];
  const thread = started(t, threads);
  const pending = thread.call({ kind: 'hang' });
  const exiting = thread.call({ kind: 'exit' });
  await t.rejects(pending, { message: 'test thread: its thread exited' }, 'no wait for an answer that cannot come');
  await t.rejects(exiting, { message: 'test thread: its thread exited' });
  t.equal(threads.length, 1, 'one thread so far');
  t.same(await thread.call({ kind: 'echo', value: 1 }), 1, 'the next call is answered');
  t.equal(threads.length, 2, 'by a new thread');
  t.same(await thread.call({ kind: 'echo', value: 2 }), 2, 'which serves the calls after it');
  t.equal(threads.length, 2, 'and stays');
});

void t.test('a stopped thread is not started again', async (t) => {
  const threads: Worker[] = [];
  const thread = started(t, threads);
  await thread.terminate();
  await t.rejects(thread.call({ kind: 'echo', value: 1 }), { message: 'test thread: its thread was stopped' });
  t.equal(threads.length, 1);
});

void t.test('an idle thread does not keep the process alive; a pending call does', async (t) => {
  const worker = new Worker(source, { eval: true });
  t.teardown(() => worker.terminate());
  const refs: string[] = [];
  const ref = worker.ref.bind(worker);
  const unref = worker.unref.bind(worker);
  worker.ref = () => (refs.push('ref'), ref());
  worker.unref = () => (refs.push('unref'), unref());
  const thread = threadCalls<Call, unknown>(() => worker, (reason) => new Error(reason));
  await thread.call({ kind: 'echo', value: 1 });
  t.same(refs, ['unref', 'ref', 'unref'], 'unref at start, ref while the call is pending, unref once answered');
});

void t.test('a thread that cannot start fails the call, as a rejected promise; the next call tries again', async (t) => {
  let starts = 0;
  const threads: Worker[] = [];
  const thread = threadCalls<Call, unknown>(
    () => {
      starts++;
      if (starts === 2) throw new Error('no memory for a thread');
      const worker = new Worker(source, { eval: true });
      threads.push(worker);
      return worker;
    },
    (reason) => new Error(`test thread: ${reason}`),
  );
  t.teardown(() => thread.terminate());
  await t.rejects(thread.call({ kind: 'exit' }), { message: 'test thread: its thread exited' });
  const failing = thread.call({ kind: 'echo', value: 1 });
  t.type(failing, Promise, 'a promise, not a throw');
  await t.rejects(failing, { message: 'test thread: its thread could not start: no memory for a thread' });
  t.same(await thread.call({ kind: 'echo', value: 2 }), 2, 'the next call starts one');
  t.equal(starts, 3);
});
