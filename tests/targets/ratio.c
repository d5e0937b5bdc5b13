/* Test target with a known CPU profile: 75% of its work in hot_a (reached
 * through main -> run -> path_a1 -> path_a2 -> path_a3 -> hot_a) and 25% in
 * hot_b (main -> run -> path_b1 -> hot_b). Usage: ratio [seconds] */
#include <stdlib.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))
/* Same code at the same alignment: without it, loop placement relative to
 * cache lines and branch boundaries makes one copy measurably faster. */
#define HOT NOIPA __attribute__((aligned(64)))

volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* gcc omits the frame-pointer setup in leaf functions even with
 * -fno-omit-frame-pointer; calling `mark` keeps the hot functions non-leaf. */
NOIPA void mark(void) { sink++; }

HOT void hot_a(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i * i;
	mark();
}

HOT void hot_b(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i * i;
	mark();
}

NOIPA void path_a3(unsigned long n) { hot_a(n); sink++; }
NOIPA void path_a2(unsigned long n) { path_a3(n); sink++; }
NOIPA void path_a1(unsigned long n) { path_a2(n); sink++; }
NOIPA void path_b1(unsigned long n) { hot_b(n); sink++; }

NOIPA void run(double seconds)
{
	const unsigned long unit = 200000;
	double end = now() + seconds;
	/* Equal calls (same length) three times as often in the hot_a chain,
	 * so the ratio does not depend on loop length effects. */
	while (now() < end) {
		path_a1(unit);
		path_b1(unit);
		path_a1(unit);
		path_a1(unit);
	}
}

int main(int argc, char **argv)
{
	run(argc > 1 ? atof(argv[1]) : 3600);
	return 0;
}
