/* CPU burner for the "two probes never stall a CPU" test: fixed work per
 * iteration, prints how many iterations each second took, forever. */
#include <stdio.h>
#include <time.h>

volatile unsigned long sink;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	unsigned long it = 0;
	double next = now() + 1;
	for (;;) {
		for (unsigned long i = 0; i < 20000; i++)
			sink += i * i;
		it++;
		double t = now();
		if (t >= next) {
			/* A second that took longer (the burner was stalled) is
			 * reported as the rate it had. */
			printf("%.0f\n", it / (t - next + 1));
			it = 0;
			next = t + 1;
		}
	}
}
