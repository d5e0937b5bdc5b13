/* Test target with two threads on the CPU: main spins in main_spin(), a
 * pthread named "worker" in worker_spin(), each for the given seconds of
 * wall-clock time. Usage: two_threads [seconds] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))

static double seconds = 3600;
volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOIPA void main_spin(double end)
{
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

NOIPA void worker_spin(double end)
{
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

NOIPA void *worker(void *arg)
{
	pthread_setname_np(pthread_self(), "worker");
	worker_spin(*(double *)arg);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;
	if (argc > 1)
		seconds = atof(argv[1]);
	double end = now() + seconds;
	pthread_create(&t, NULL, worker, &end);
	main_spin(end);
	pthread_join(t, NULL);
	return 0;
}
