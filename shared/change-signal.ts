import { closeSync, openSync, watch, writeFileSync, type FSWatcher } from 'node:fs';

/**
 * Wake-ups between processes that share an SQLite file (the embedded event store,
 * the embedded read DB). A process that has committed to `<file>` writes a byte to
 * `<file>-changed`; processes that wait for its commits watch that file (inotify on
 * Linux, through `fs.watch`) and look at once, instead of at their next poll. The
 * byte means nothing and is never read; the file holds nothing else.
 *
 * Only ever a hint: a reader that misses one (a file system without change
 * notification, a watch that failed, a signal file removed by hand) still polls
 * at its usual interval, so the signal shortens waits but nothing depends on it.
 * The commit is visible before the signal is written, so a reader woken by it
 * finds the new data.
 */
export const changeSignalFile = (file: string): string => `${file}-changed`;

/** After a commit to `file`: wakes the processes watching it. Never throws (a hint; readers also poll). */
export function announceChange(file: string): void {
  try {
    writeFileSync(changeSignalFile(file), '1');
  } catch {
    // Readers fall back to their poll interval.
  }
}

/** Wake-ups within one process: `notify()` resolves every pending `wait`. */
export interface WakeSignal {
  notify(): void;
  /** Resolves at the next `notify()`, or after `ms` at the latest. */
  wait(ms: number): Promise<void>;
}

export function wakeSignal(): WakeSignal {
  const waiters = new Set<() => void>();
  return {
    notify() {
      for (const wake of [...waiters]) wake();
    },
    wait(ms) {
      return new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        waiters.add(done);
      });
    },
  };
}

/**
 * For waits that can only poll (a read DB on another host): wakes every pending
 * `wait` together every `intervalMs`, and runs no timer while nothing waits. Waits
 * woken together look together, so their lookups share one batch.
 */
export function sharedTicker(intervalMs: number): Pick<WakeSignal, 'wait'> {
  const signal = wakeSignal();
  let waiting = 0;
  let timer: NodeJS.Timeout | undefined;
  return {
    async wait(ms) {
      waiting += 1;
      timer ??= setInterval(() => signal.notify(), intervalMs);
      try {
        await signal.wait(ms);
      } finally {
        waiting -= 1;
        if (waiting === 0) {
          clearInterval(timer);
          timer = undefined;
        }
      }
    },
  };
}

/**
 * Calls `onChange` whenever another process announces a commit to `file`
 * (`announceChange`), until `close()`. Creates the signal file when it is
 * missing, and watches it again when it is replaced or removed. A watch that
 * cannot be had is given up silently: the caller's polling covers it.
 */
export function watchChanges(file: string, onChange: () => void): { close(): void } {
  const signalFile = changeSignalFile(file);
  let watcher: FSWatcher | undefined;
  let closed = false;
  const start = () => {
    if (closed) return;
    try {
      closeSync(openSync(signalFile, 'a'));
      watcher = watch(signalFile, { persistent: false }, (event) => {
        onChange();
        // Replaced or removed: this watch follows the old file; watch the name again.
        if (event === 'rename') restart();
      });
      watcher.on('error', restart);
    } catch {
      watcher = undefined;
    }
  };
  const restart = () => {
    watcher?.close();
    watcher = undefined;
    setImmediate(start);
  };
  start();
  return {
    close() {
      closed = true;
      watcher?.close();
      watcher = undefined;
    },
  };
}
