/* Test target with named threads: three pthreads "worker-1".."worker-3"
 * spin in worker_spin via thread_main. Usage: threads [seconds] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
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

NOIPA void worker_spin(void)
{
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

NOIPA void *thread_main(void *arg)
{
	char name[16];
	snprintf(name, sizeof(name), "worker-%ld", (long)arg);
	pthread_setname_np(pthread_self(), name);
	worker_spin();
	sink++;
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[3];
	if (argc > 1)
		seconds = atof(argv[1]);
	for (long i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, thread_main, (void *)(i + 1));
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	return 0;
}
