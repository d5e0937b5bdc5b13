/* Test target with a deep stack: main -> recurse (DEPTH frames, each with a
 * 64-byte local buffer) -> spin_at_bottom. Usage: recurse DEPTH [seconds] */
#include <stdlib.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))

volatile unsigned long sink;
static double seconds = 3600;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOIPA void spin_at_bottom(void)
{
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

NOIPA void recurse(int depth)
{
	volatile char frame[64];
	frame[depth % 64] = (char)depth;
	if (depth > 1)
		recurse(depth - 1);
	else
		spin_at_bottom();
	sink += frame[depth % 64]; /* not a tail call */
}

int main(int argc, char **argv)
{
	int depth = argc > 1 ? atoi(argv[1]) : 300;
	if (argc > 2)
		seconds = atof(argv[2]);
	recurse(depth);
	return 0;
}
