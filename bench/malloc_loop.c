/* Benchmark workload for --probe memleak: a malloc+free loop.
 * Prints "ready", waits for a line on stdin, then runs for SECONDS
 * (default 3) and prints "pairs_per_sec N" before exiting.
 * Sizes cycle through 16..1024 bytes, as small objects in real programs. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 3;
	char buf[16];
	unsigned long pairs = 0;
	/* Through a volatile slot so the compiler cannot pair up and drop
	 * the malloc and the free. */
	char *volatile slot;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	if (!fgets(buf, sizeof(buf), stdin))
		return 1;
	double start = now(), end = start + seconds, t = start;
	while (t < end) {
		for (int i = 0; i < 1024; i++) {
			slot = malloc(16 + (i & 63) * 16);
			slot[0] = (char)i;
			free(slot);
		}
		pairs += 1024;
		t = now();
	}
	printf("pairs_per_sec %.0f\n", pairs / (t - start));
	return 0;
}
