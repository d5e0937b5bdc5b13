/* Test target that spends its time in the kernel: reads /dev/zero in large
 * blocks through main -> read_loop -> read(). Usage: syscalls [seconds] */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))

static char buf[1 << 20];

NOIPA void read_loop(int fd, double seconds)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		if (read(fd, buf, sizeof(buf)) < 0)
			exit(1);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv)
{
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0)
		return 1;
	read_loop(fd, argc > 1 ? atof(argv[1]) : 3600);
	return 0;
}
