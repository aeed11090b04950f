import cliProgress from 'cli-progress';
import type { RebuildProgress } from '../../projector/rebuild.js';

export interface ProgressView {
  update(progress: RebuildProgress): void;
  /** Prints a line without tearing the bar. */
  log(line: string): void;
  stop(): void;
}

/**
 * The rebuild's progress on stderr: a bar (events done / total, events/s, ETA)
 * on a terminal, a plain line every few seconds otherwise. The total is
 * estimated from log positions: the store's head position scaled by how many
 * events the positions passed so far held (exact for the embedded store, whose
 * positions count events; an estimate for EventStoreDB's byte offsets). While
 * the log is read stream after stream, the rebuild's own estimate of that read
 * (`expected`) stands in. Without either only what is done is shown.
 */
export async function rebuildProgress(deps: {
  stream: NodeJS.WriteStream;
  headPosition?: () => Promise<bigint | undefined>;
  intervalMs?: number;
}): Promise<ProgressView> {
  const { stream } = deps;
  const started = performance.now();
  const readHead = async () => deps.headPosition?.().catch(() => undefined);
  let head = await readHead();
  let last: RebuildProgress = { phase: 'replaying', events: 0, position: undefined };

  const headTimer = setInterval(() => void readHead().then((h) => (head = h ?? head)), 2000);
  headTimer.unref();
  const speed = () => Math.round(last.events / Math.max(0.001, (performance.now() - started) / 1000));
  const total = () => {
    if (last.expected !== undefined) return Math.max(last.events, last.expected);
    if (head === undefined) return undefined;
    if (last.position === undefined || last.position <= 0n) return Number(head);
    return Math.max(last.events, Math.round((last.events * Number(head)) / Number(last.position)));
  };

  if (stream.isTTY) {
    const bars = new cliProgress.MultiBar(
      {
        format:
          head === undefined
            ? '{phase} | {value} events | {speed} events/s'
            : '{phase} [{bar}] {percentage}% | {value}/{total} events | {speed} events/s | ETA {eta_formatted}',
        stream,
        hideCursor: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    const bar = bars.create(total() ?? 0, 0, { phase: last.phase, speed: 0 });
    return {
      update(progress) {
        last = progress;
        const estimate = total();
        if (estimate !== undefined) bar.setTotal(estimate);
        bar.update(progress.events, { phase: progress.phase, speed: speed() });
      },
      log: (line) => bars.log(`${line}\n`),
      stop() {
        clearInterval(headTimer);
        bars.stop();
      },
    };
  }

  const print = () => {
    const estimate = total();
    const rate = speed();
    const done =
      estimate === undefined
        ? `${last.events} events`
        : `${last.events}/${estimate} events (${Math.floor((100 * last.events) / Math.max(1, estimate))}%)`;
    const eta = estimate !== undefined && rate > 0 ? `, ETA ${Math.ceil(Math.max(0, estimate - last.events) / rate)} s` : '';
    stream.write(`rebuild: ${last.phase}: ${done}, ${rate} events/s${eta}\n`);
  };
  const lineTimer = setInterval(print, deps.intervalMs ?? 5000);
  lineTimer.unref();
  return {
    update: (progress) => void (last = progress),
    log: (line) => void stream.write(`${line}\n`),
    stop() {
      clearInterval(headTimer);
      clearInterval(lineTimer);
    },
  };
}
