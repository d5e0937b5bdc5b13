/* Test target for --probe offcpu and wall: known ways to wait.
 *   waits split CYCLES COMPUTE_MS SLEEP_MS: each cycle computes for
 *       COMPUTE_MS of CPU time in compute() then sleeps in rest(); after
 *       "done" it prints the CPU time it computed and the time it rested,
 *       as it measured them (ns).
 *   waits pipe: blocks in wait_input() reading a pipe nobody writes.
 *   waits states: thread "syncer" writes and fsyncs a file in flush_disk()
 *       (uninterruptible, D), thread "napper" sleeps in nap() (S).
 *   waits exits: thread "brief" sleeps 300 ms in short_wait() and exits;
 *       main sleeps 600 ms in long_wait() and the process exits.
 * Every mode prints "ready", waits for a line on stdin, and then works;
 * split prints "done" and waits for stdin to close. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))

static volatile unsigned long sink;

/* This thread's CPU time: computing "30 ms" means 30 ms on the CPU,
 * however busy the machine is. */
static double cpu_time(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

NOIPA static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&t, NULL);
	sink++;
}

NOIPA void compute(long ms)
{
	double end = cpu_time() + ms / 1000.0;
	while (cpu_time() < end)
		for (int i = 0; i < 1000; i++)
			sink += i;
}

NOIPA void rest(long ms) { sleep_ms(ms); sink++; }

static double wall_time(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

NOIPA int wait_input(int fd)
{
	char c;
	int r = read(fd, &c, 1);
	sink++;
	return r;
}

NOIPA void flush_disk(int fd)
{
	static char block[4096];
	memset(block, sink & 0xff, sizeof(block));
	if (write(fd, block, sizeof(block)) < 0)
		return;
	fsync(fd);
	sink++;
}

static void *syncer(void *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	for (;;) {
		flush_disk(fd);
		if (lseek(fd, 0, SEEK_END) > (64 << 20))
			lseek(fd, 0, SEEK_SET);
	}
	return NULL;
}

NOIPA void nap(void) { sleep_ms(20); sink++; }

static void *napper(void *arg)
{
	for (;;)
		nap();
	return arg;
}

NOIPA void short_wait(void) { sleep_ms(300); sink++; }
NOIPA void long_wait(void) { sleep_ms(600); sink++; }

static void *brief(void *arg)
{
	short_wait();
	return arg;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "split";
	char line[64];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	if (!strcmp(mode, "split")) {
		long cycles = atol(argv[2]), busy = atol(argv[3]), idle = atol(argv[4]);
		double on = 0, off = 0;
		for (long i = 0; i < cycles; i++) {
			double c = cpu_time();
			compute(busy);
			on += cpu_time() - c;
			double w = wall_time();
			rest(idle);
			off += wall_time() - w;
		}
		/* What it measured itself: CPU time computing, time resting. */
		printf("done\n%.0f %.0f\n", on * 1e9, off * 1e9);
		fflush(stdout);
		while (fgets(line, sizeof(line), stdin))
			;
	} else if (!strcmp(mode, "pipe")) {
		int p[2];
		if (pipe(p))
			return 1;
		return wait_input(p[0]) < 0;
	} else if (!strcmp(mode, "states")) {
		pthread_t a, b;
		pthread_create(&a, NULL, syncer, argc > 2 ? argv[2] : "/tmp/flameprobe-waits");
		pthread_setname_np(a, "syncer");
		pthread_create(&b, NULL, napper, NULL);
		pthread_setname_np(b, "napper");
		pthread_join(a, NULL);
	} else if (!strcmp(mode, "exits")) {
		pthread_t t;
		pthread_create(&t, NULL, brief, NULL);
		pthread_setname_np(t, "brief");
		long_wait();
		pthread_join(t, NULL);
	}
	return 0;
}
