/* Test target for --probe memleak: leaks an exactly known number of bytes
 * through distinct call chains while churning thousands of allocations of
 * every kind that it frees again.
 *
 *   main -> run_leaks -> via_malloc -> leak_malloc   3 x 1000 bytes (malloc)
 *   main -> run_leaks -> leak_calloc                 2 x 200 bytes (calloc 5 x 40)
 *   main -> run_leaks -> leak_realloc                1 x 300 bytes (realloc 4096 -> 300)
 *   main -> run_leaks -> leak_posix_memalign         1 x 777 bytes (posix_memalign)
 *   main -> run_leaks -> leak_aligned_alloc          2 x 512 bytes (aligned_alloc)
 *   main -> run_leaks -> leak_strdup -> strdup       1 x 64 bytes (malloc inside libc's
 *                                                    strdup, which has no frame pointer)
 *
 * Usage: leaks [wait|cmd|xthread]
 *   wait (default): print "ready", wait for a line on stdin, work, print
 *        "done", then wait for stdin to close before exiting;
 *   cmd: work and exit at once (for `flameprobe record -- leaks cmd`);
 *   xthread: like wait, but one thread allocates and another frees;
 *   many: like wait, but leaks MANY x 100 bytes through
 *         main -> run_many -> leak_many (for sampling estimates). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))
#define CHURN 3000

void *volatile keep[16];
int nkeep;
volatile unsigned long sink;

NOIPA void leak_malloc(void) { keep[nkeep++] = malloc(1000); }
NOIPA void via_malloc(void) { leak_malloc(); sink++; }
NOIPA void leak_calloc(void) { keep[nkeep++] = calloc(5, 40); }
NOIPA void leak_realloc(void)
{
	char *p = malloc(4096);
	memset(p, 1, 4096);
	keep[nkeep++] = realloc(p, 300);
}
NOIPA void leak_posix_memalign(void)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, 777) == 0)
		keep[nkeep++] = p;
}
NOIPA void leak_aligned_alloc(void) { keep[nkeep++] = aligned_alloc(256, 512); }
NOIPA void leak_strdup(void)
{
	/* 63 characters and the terminating NUL. */
	keep[nkeep++] = strdup("leaked through strdup, whose caller must not be lost: 63 chars.");
}

NOIPA void run_leaks(void)
{
	for (int i = 0; i < 3; i++)
		via_malloc();
	for (int i = 0; i < 2; i++)
		leak_calloc();
	leak_realloc();
	leak_posix_memalign();
	leak_strdup();
	for (int i = 0; i < 2; i++)
		leak_aligned_alloc();
	sink++; /* no tail call: run_leaks stays on the stack */
}

NOIPA void churn_once(int i)
{
	size_t n = 16 + (i % 64) * 24;
	void *p, *q;

	free(malloc(n));
	free(calloc(3, n));
	p = malloc(n);
	p = realloc(p, n * 3);     /* grows: usually moves */
	p = realloc(p, n / 2 + 1); /* shrinks */
	free(p);
	free(realloc(NULL, n));    /* realloc(NULL) calls malloc inside glibc */
	p = reallocarray(NULL, 4, n);
	free(reallocarray(p, 8, n));
	if (posix_memalign(&q, 128, n) == 0)
		free(q);
	free(aligned_alloc(64, 128));
	free(memalign(32, n));
	free(valloc(n));
	/* pvalloc is glibc's alone: an allocator preloaded in its place
	 * (jemalloc) leaves it to glibc, whose block it cannot free. */
	if (!getenv("LD_PRELOAD"))
		free(pvalloc(n));
	free(NULL);
	sink += n;
}

#define MANY 20000

NOIPA void leak_many(void) { free(malloc(100 + sink % 7)); keep[0] = malloc(100); }

NOIPA void run_many(void)
{
	for (int i = 0; i < MANY; i++)
		leak_many();
}

NOIPA void run_churn(void)
{
	for (int i = 0; i < CHURN; i++)
		churn_once(i);
}

/* Cross-thread: the producer allocates, the consumer frees. */
static void *slots[CHURN];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int produced, consumed, started;

NOIPA void *producer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	while (!started)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < CHURN; i++) {
		void *p = malloc(100 + i % 500);
		pthread_mutex_lock(&lock);
		slots[produced++] = p;
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}

NOIPA void *consumer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	while (consumed < CHURN) {
		while (consumed == produced)
			pthread_cond_wait(&cond, &lock);
		void *p = slots[consumed++];
		pthread_mutex_unlock(&lock);
		free(p);
		pthread_mutex_lock(&lock);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

static void wait_line(void)
{
	char buf[64];
	if (!fgets(buf, sizeof(buf), stdin))
		exit(1);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "wait";
	int xthread = strcmp(mode, "xthread") == 0;
	pthread_t a, b;

	/* Everything set up before the recording: stdio buffers, threads. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (xthread) {
		pthread_create(&a, NULL, producer, NULL);
		pthread_create(&b, NULL, consumer, NULL);
	}
	if (strcmp(mode, "cmd") != 0) {
		printf("ready\n");
		wait_line();
	}
	if (xthread) {
		pthread_mutex_lock(&lock);
		started = 1;
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
	} else if (strcmp(mode, "many") == 0) {
		run_many();
	} else {
		run_leaks();
		run_churn();
	}
	if (strcmp(mode, "cmd") == 0)
		return 0;
	printf("done\n");
	while (getchar() != EOF)
		;
	return 0;
}
