/* Switch-heavy workload for the off-CPU benchmark: two threads pass a
 * byte back and forth over two pipes, so every round trip is two blocking
 * reads; with both threads on one CPU, two context switches. Runs for
 * SECONDS after "go" on stdin and prints the round trips per second. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int ab[2], ba[2];
static volatile int stop;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void *echo(void *arg)
{
	char c;
	while (read(ab[0], &c, 1) == 1 && write(ba[1], &c, 1) == 1)
		;
	return arg;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 5;
	if (pipe(ab) || pipe(ba))
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, echo, NULL);
	char line[16];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	long trips = 0;
	double end = now() + secs;
	char c = 'x';
	while (now() < end) {
		for (int i = 0; i < 100; i++) {
			if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
				return 1;
		}
		trips += 100;
	}
	printf("trips_per_sec %.0f\n", trips / secs);
	fflush(stdout);
	return 0;
}
