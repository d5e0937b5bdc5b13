# flameprobe test target for JIT profiling (tests/suite/jit_record.rs), run
# with Python 3.12+ `-X perf`: spends 75% of its CPU time in the chain
# main -> a1 -> a2 -> a3 -> hot_a and 25% in main -> b1 -> hot_b (the same
# code, given 3 and 1 units of work per round). Prints "ready" after a
# warm-up of 1 s, runs for the number of seconds given as its argument
# (default 600), then exits.
import sys
import time

UNIT = 2000


def hot_a(n):
    x = 1
    for i in range(n):
        x = (x * 31 + i) % 1000003
    return x


def hot_b(n):
    x = 1
    for i in range(n):
        x = (x * 31 + i) % 1000003
    return x


def a3(n):
    return hot_a(n) + 3


def a2(n):
    return a3(n) + 2


def a1(n):
    return a2(n) + 1


def b1(n):
    return hot_b(n) + 1


def main(seconds):
    warm = time.monotonic() + 1
    end = warm + seconds
    ready = False
    sink = 0
    while True:
        t = time.monotonic()
        if t >= end:
            break
        if not ready and t >= warm:
            print("ready", sink, flush=True)
            ready = True
        sink += a1(3 * UNIT)
        sink += b1(UNIT)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 600)
