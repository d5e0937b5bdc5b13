/* Mostly asleep: burns about 1 ms of CPU every 200 ms, forever (so a
 * recording samples it a few times a second at little cost; many copies
 * of it make many distinct binaries). */
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	for (;;) {
		double end = now() + 0.001;
		while (now() < end)
			for (int i = 0; i < 1000; i++)
				sink += i;
		usleep(200000);
	}
}
