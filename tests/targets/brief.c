/* A short-lived program: burns 10-20 ms of CPU in brief_work and exits.
 * Usage: brief [MS] (default: 10 to 20 ms, from the pid). */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))

static volatile unsigned long sink;

static double cpu_time(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

NOIPA void brief_work(double secs)
{
	double end = cpu_time() + secs;
	while (cpu_time() < end)
		for (int i = 0; i < 1000; i++)
			sink += i;
}

int main(int argc, char **argv)
{
	long ms = argc > 1 ? atol(argv[1]) : 10 + getpid() % 11;
	brief_work(ms / 1000.0);
	return 0;
}
