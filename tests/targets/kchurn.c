/* Target for the memleak + kmemleak test: CPU-bound, allocating without
 * pause through malloc (keeping a ring of the last 200000 blocks, so the
 * memleak probe's table of outstanding allocations grows and churns) and
 * making the kernel allocate (open/read/close) in between. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define RING 200000
static void *ring[RING];

int main(void)
{
	unsigned long n = 0;
	char buf[256];
	for (;;) {
		for (int i = 0; i < 1000; i++) {
			unsigned long k = n++ % RING;
			free(ring[k]);
			ring[k] = malloc(64 + (i & 31) * 8);
		}
		int fd = open("/proc/self/stat", O_RDONLY);
		if (fd >= 0) {
			if (read(fd, buf, sizeof(buf)) < 0)
				return 1;
			close(fd);
		}
	}
}
