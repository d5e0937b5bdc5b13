# flameprobe test target for JIT symbolization (tests/suite/jit.rs), run
# with Python 3.12+ `-X perf`: calls named functions (each gets a perf
# trampoline on first call), prints "ready", then waits; a line "exit" (or
# end of input) ends it.
import sys


def fib_py(n):
    return n if n < 2 else fib_py(n - 1) + fib_py(n - 2)


class Shape:
    def area(self, k):
        return sum(i * 0.5 for i in range(k))


total = 0
shape = Shape()
for _ in range(200):
    total += fib_py(10)
    total += shape.area(20)
print("ready", total, flush=True)

for line in sys.stdin:
    if line.strip() == "exit":
        break
