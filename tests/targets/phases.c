/* Test target whose work changes over time: first warm_up() runs until the
 * thread has used 0.4 s of CPU, then busy() until it has used 1.2 s, then
 * the program exits. Time order puts every warm_up sample before every
 * busy one; weight order (busy is twice as heavy) and name order put busy
 * first. Usage: phases [scale] (CPU times multiplied by scale). */
#include <stdlib.h>
#include <time.h>

#define NOIPA __attribute__((noinline, noipa))

volatile unsigned long sink;

/* This thread's CPU time, so the phases hold however busy the machine. */
static double cpu_time(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

NOIPA void spin(void)
{
	for (unsigned long i = 0; i < 100000; i++)
		sink += i;
}

NOIPA void warm_up(double until)
{
	while (cpu_time() < until)
		spin();
}

NOIPA void busy(double until)
{
	while (cpu_time() < until)
		spin();
}

int main(int argc, char **argv)
{
	double scale = argc > 1 ? atof(argv[1]) : 1.0;
	warm_up(0.4 * scale);
	busy(1.2 * scale);
	return 0;
}
