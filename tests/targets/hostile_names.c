/* Test target whose names try to forge a profile: three threads name
 * themselves (prctl PR_SET_NAME, as any unprivileged process may)
 * "x 999999999\n" (a count and a line break), "w;1 2" (a frame separator)
 * and one with terminal escape sequences; each spins in name_spin.
 * With "ff" the process (main thread) is renamed "proc\xff" (a byte that
 * is not UTF-8). Prints "ready" once every thread is named.
 * Usage: hostile_names [ff] [seconds] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))

static double seconds = 3600;
static pthread_barrier_t named;
volatile unsigned long sink;

static const char *names[] = {
	"x 999999999\n",
	"w;1 2",
	"\x1b[31mE\x1b]0;t\x07",
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOIPA void name_spin(void)
{
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			sink += i;
}

NOIPA void *thread_main(void *arg)
{
	prctl(PR_SET_NAME, names[(long)arg], 0, 0, 0);
	pthread_barrier_wait(&named);
	name_spin();
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[3];
	int arg = 1;
	if (argc > arg && strcmp(argv[arg], "ff") == 0) {
		prctl(PR_SET_NAME, "proc\xff", 0, 0, 0);
		arg++;
	}
	if (argc > arg)
		seconds = atof(argv[arg]);
	pthread_barrier_init(&named, NULL, 4);
	for (long i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, thread_main, (void *)i);
	pthread_barrier_wait(&named);
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	return 0;
}
