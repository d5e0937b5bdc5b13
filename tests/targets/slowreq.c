/* Test target for --probe offcpu: SkyWalking's "slow endpoint" example.
 *   main -> serve -> handle_request -> fast_method   sleeps 100 ms
 *                                   -> slow_method1  sleeps 1000 ms
 *                                   -> slow_method2  sleeps 1500 ms
 * per request, so the three methods hold 3.85%, 38.46% and 57.69% of
 * handle_request's time off the CPU; a thread named "ticker" wakes every
 * 10 ms meanwhile.
 * Usage: slowreq REQUESTS: prints "ready", waits for a line on stdin,
 * serves REQUESTS requests, prints "done" and waits for stdin to close. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))

static volatile int sink;

NOIPA static void sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&t, NULL);
	sink++; /* no tail call: keep the caller's frame */
}

NOIPA void fast_method(void) { sleep_ms(100); sink++; }
NOIPA void slow_method1(void) { sleep_ms(1000); sink++; }
NOIPA void slow_method2(void) { sleep_ms(1500); sink++; }

NOIPA void handle_request(void)
{
	fast_method();
	slow_method1();
	slow_method2();
	sink++;
}

NOIPA void serve(long requests)
{
	for (long i = 0; i < requests; i++)
		handle_request();
	sink++;
}

static void *ticker(void *arg)
{
	for (;;)
		sleep_ms(10);
	return arg;
}

int main(int argc, char **argv)
{
	long requests = argc > 1 ? atol(argv[1]) : 3;
	pthread_t t;
	pthread_create(&t, NULL, ticker, NULL);
	pthread_setname_np(t, "ticker");
	char line[64];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	serve(requests);
	printf("done\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	return 0;
}
