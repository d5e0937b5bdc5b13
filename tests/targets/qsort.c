/* Test target whose hot function is a callback called from inside libc:
 * main -> sort_loop -> qsort -> (glibc internals) -> cmp_values.
 * Usage: qsort [seconds] */
#include <stdlib.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))
#define N 50000

static int values[N];
volatile long sink;

NOIPA int cmp_values(const void *a, const void *b)
{
	/* Make the callback, not glibc's merge loop, the hot part. */
	long x = *(const int *)a, y = *(const int *)b, acc = 0;
	for (int i = 0; i < 40; i++)
		acc += (x ^ i) * (y | i);
	sink = acc;
	return (x > y) - (x < y);
}

NOIPA void sort_loop(double seconds)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (int i = 0; i < N; i++)
			values[i] = rand();
		qsort(values, N, sizeof(int), cmp_values);
		sink += values[0]; /* no tail call: sort_loop stays on the stack */
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv)
{
	sort_loop(argc > 1 ? atof(argv[1]) : 3600);
	return 0;
}
