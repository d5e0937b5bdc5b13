/* Test target for frame naming: half of its work in a C function named
 * `Sa` (a valid C++ type encoding, std::allocator, which must not be
 * demangled) whose loop is an always-inline helper, half in a loop calling
 * clock_gettime (the vDSO). Usage: names [seconds] */
#include <stdlib.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))

volatile unsigned long sink;

static inline __attribute__((always_inline)) void helper(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		sink += i * i;
}

NOIPA void Sa(unsigned long n)
{
	helper(n);
	sink++;
}

NOIPA void clock_loop(unsigned long n)
{
	struct timespec ts;
	for (unsigned long i = 0; i < n; i++)
		clock_gettime(CLOCK_MONOTONIC, &ts);
	sink += ts.tv_nsec;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOIPA void run(double seconds)
{
	double end = now() + seconds;
	while (now() < end) {
		Sa(2000000);
		clock_loop(100000);
	}
}

int main(int argc, char **argv)
{
	run(argc > 1 ? atof(argv[1]) : 3600);
	return 0;
}
