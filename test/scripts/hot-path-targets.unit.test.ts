import t from 'tap';
import { lagVerdict, targetVerdicts } from '../../scripts/bench/hot-path-targets.js';

void t.test("bench:http's verdicts: each path against its ratio and p99, per read DB", async (t) => {
  t.strictSame(
    targetVerdicts('embedded', [
      { path: 'GET /users/:id', ratio: 0.62, p99Ms: 6 },
      { path: 'GET /users?email=', ratio: 0.58, p99Ms: 6 },
      { path: 'POST /users', ratio: 0.19, p99Ms: 25 },
    ]),
    [
      'GET /users/:id: 0.62 of bare (target >= 0.60): met; p99 6 ms (target <= 5): missed',
      "GET /users?email=: 0.94 of the lookup's ratio (target >= 0.80): met",
      'POST /users: 0.19 of the echo (target >= 0.40): missed; p99 25 ms (target <= 25): met',
    ],
  );
  t.strictSame(targetVerdicts('mariadb', [{ path: 'GET /users/:id', ratio: 0.39, p99Ms: 10 }]), [
    'GET /users/:id: 0.39 of bare (target >= 0.40): missed; p99 10 ms (target <= 10): met',
  ]);
});

void t.test("bench:http's verdicts: the list against the lookup's measured ratio, or against 0.8 of its target when it did not run", async (t) => {
  t.strictSame(
    targetVerdicts('mariadb', [
      { path: 'GET /users/:id', ratio: 0.5, p99Ms: 4 },
      { path: 'GET /users?email=', ratio: 0.39, p99Ms: 5 },
    ])[1],
    "GET /users?email=: 0.78 of the lookup's ratio (target >= 0.80): missed",
  );
  t.strictSame(targetVerdicts('embedded', [{ path: 'GET /users?email=', ratio: 0.5, p99Ms: 5 }]), [
    'GET /users?email=: 0.50 of bare (target >= 0.48): met',
  ]);
});

void t.test("bench:writes' verdict on the lag: under 50 ms at 500 writes/s on the embedded stack, nothing failed", async (t) => {
  const stated = 'target (issue 10): p99 < 50 ms at 500 writes/s on the embedded stack';
  t.equal(lagVerdict({ writesPerSecond: 500, readDb: 'embedded', p99Ms: 17.4, failed: 0 }), `${stated}: met`);
  t.equal(lagVerdict({ writesPerSecond: 500, readDb: 'embedded', p99Ms: 50, failed: 0 }), `${stated}: missed`);
  t.equal(lagVerdict({ writesPerSecond: 500, readDb: 'embedded', p99Ms: 12, failed: 3 }), `${stated}: missed (3 failed)`);
  t.equal(lagVerdict({ writesPerSecond: 200, readDb: 'embedded', p99Ms: 12, failed: 0 }), `${stated}; not this run's setting`);
  t.equal(lagVerdict({ writesPerSecond: 500, readDb: 'mariadb', p99Ms: 12, failed: 0 }), `${stated}; not this run's setting`);
});
