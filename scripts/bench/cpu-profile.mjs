// Preloaded by `npm run bench:http` with BENCH_PROFILE_DIR (NODE_OPTIONS='--import <this file>'):
// the CPU profile `--cpu-prof` would write, which NODE_OPTIONS may not carry. Starts the
// profiler at load; writes <dir>/<pid>.cpuprofile when the process exits.
import { writeFileSync, mkdirSync } from 'node:fs';
import { Session } from 'node:inspector';

const dir = process.env.CPU_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 200 });
  session.post('Profiler.start');
  process.on('exit', () => {
    // An in-thread session answers synchronously, so this finishes before the process does.
    session.post('Profiler.stop', (error, result) => {
      if (error) return;
      mkdirSync(dir, { recursive: true });
      writeFileSync(`${dir}/${process.argv[1]?.split('/').pop() ?? 'node'}-${process.pid}.cpuprofile`, JSON.stringify(result.profile));
    });
  });
}
