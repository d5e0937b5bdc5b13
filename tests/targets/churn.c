/* Test target for following children under churn (`record -- churn T P`):
 * creates and joins T threads, forks and reaps P short-lived processes, and
 * then forks a last child that burns CPU in child_spin for a second while
 * the parent burns CPU in parent_spin. A profiler that keeps an entry per
 * thread or per dead process runs out of room and loses the last child. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))

static void *noop(void *arg) { return arg; }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static volatile unsigned long sink;

NOIPA static void spin(double secs)
{
	double end = now() + secs;
	while (now() < end)
		for (int i = 0; i < 10000; i++)
			sink += i;
}

NOIPA static void child_spin(void) { spin(1.0); }
NOIPA static void parent_spin(void) { spin(1.0); }

int main(int argc, char **argv)
{
	long threads = argc > 1 ? atol(argv[1]) : 100000;
	long procs = argc > 2 ? atol(argv[2]) : 70000;
	for (long i = 0; i < threads; i++) {
		pthread_t t;
		if (pthread_create(&t, 0, noop, 0) == 0)
			pthread_join(t, 0);
	}
	for (long i = 0; i < procs; i++) {
		pid_t p = fork();
		if (p == 0)
			_exit(0);
		if (p > 0)
			waitpid(p, 0, 0);
	}
	pid_t last = fork();
	if (last == 0) {
		child_spin();
		_exit(0);
	}
	parent_spin();
	waitpid(last, 0, 0);
	return 0;
}
