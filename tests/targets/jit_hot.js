// flameprobe test target for JIT symbolization (tests/suite/jit.rs), run
// with `node --perf-basic-prof`: warms up named functions so V8 compiles
// them, prints "ready", then waits; a line "exit" (or end of input) ends it.
'use strict';

function fibJs(n) {
  return n < 2 ? n : fibJs(n - 1) + fibJs(n - 2);
}

class Shape {
  area(k) {
    let s = 0;
    for (let i = 0; i < k; i++) s += Math.sqrt(i);
    return s;
  }
}

const shape = new Shape();
let total = 0;
for (let i = 0; i < 20000; i++) {
  total += fibJs(12);
  total += shape.area(50);
}
process.stdout.write(`ready ${total}\n`);

process.stdin.setEncoding('utf8');
let pending = '';
process.stdin.on('data', (chunk) => {
  pending += chunk;
  if (pending.split('\n').includes('exit')) process.exit(0);
});
process.stdin.on('end', () => process.exit(0));
