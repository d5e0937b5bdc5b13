// flameprobe test target for JIT profiling (tests/suite/jit_record.rs), run
// with `node --perf-basic-prof --no-turbo-inlining`: spends 75% of its CPU
// time in the chain main -> a1 -> a2 -> a3 -> hotA and 25% in
// main -> b1 -> hotB (the same code, given 3 and 1 units of work per
// round). Prints "ready" after a warm-up of 3 s, runs for the number of
// seconds given as its argument (default 600), then exits.
'use strict';

const UNIT = 4000;
let sink = 0;

function hotA(n) {
  let x = 1;
  for (let i = 0; i < n; i++) x = (x * 31 + i) % 1000003;
  return x;
}

function hotB(n) {
  let x = 1;
  for (let i = 0; i < n; i++) x = (x * 31 + i) % 1000003;
  return x;
}

function a3(n) {
  return hotA(n) + 3;
}

function a2(n) {
  return a3(n) + 2;
}

function a1(n) {
  return a2(n) + 1;
}

function b1(n) {
  return hotB(n) + 1;
}

function main(seconds) {
  const warm = Date.now() + 3000;
  const end = warm + seconds * 1000;
  let ready = false;
  for (;;) {
    const t = Date.now();
    if (t >= end) break;
    if (!ready && t >= warm) {
      require('fs').writeSync(1, `ready ${sink}\n`);
      ready = true;
    }
    sink += a1(3 * UNIT);
    sink += b1(UNIT);
  }
}

main(Number(process.argv[2] || 600));
