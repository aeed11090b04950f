import { reportReady } from '../../shared/lifecycle.js';

// A role that reports ready only after its supervisor has gone (test/shared/lifecycle.int.test.ts).
process.once('disconnect', () => {
  setTimeout(() => {
    reportReady('child');
    setTimeout(() => process.exit(0), 100);
  }, 50);
});
process.send?.({ started: true });
