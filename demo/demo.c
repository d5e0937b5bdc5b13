/* flameprobe's demo workload: a toy "order service" with a known hot path.
 * About 60% of its CPU goes to checksum_orders (-> crc_block), about 30% to
 * sort_orders (libc qsort -> compare_orders) and the rest to writing a log
 * through the kernel. Built without frame pointers, like most binaries.
 * Usage: demo [seconds] */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define N_ORDERS 20000

struct order { uint64_t id; uint32_t amount; char note[20]; };

static struct order orders[N_ORDERS];
volatile uint64_t sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE uint32_t crc_block(const unsigned char *p, size_t n)
{
	uint32_t crc = ~0u;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1));
	}
	return ~crc;
}

NOINLINE void checksum_orders(void)
{
	for (int i = 0; i < N_ORDERS; i++)
		sink += crc_block((const unsigned char *)&orders[i], sizeof(struct order));
}

NOINLINE int compare_orders(const void *a, const void *b)
{
	const struct order *x = a, *y = b;
	return (x->amount > y->amount) - (x->amount < y->amount);
}

NOINLINE void sort_orders(void)
{
	for (int i = 0; i < N_ORDERS; i++)
		orders[i].amount = (uint32_t)rand();
	qsort(orders, N_ORDERS, sizeof(struct order), compare_orders);
}

NOINLINE void write_log(int fd)
{
	static char line[4096];
	memset(line, 'x', sizeof(line));
	for (int i = 0; i < 8; i++)
		if (write(fd, line, sizeof(line)) < 0)
			exit(1);
}

NOINLINE void serve(double seconds)
{
	int fd = open("/dev/null", O_WRONLY);
	double end = now() + seconds;
	while (now() < end) {
		checksum_orders();
		sort_orders();
		write_log(fd);
	}
	close(fd);
}

int main(int argc, char **argv)
{
	for (int i = 0; i < N_ORDERS; i++)
		orders[i].id = i;
	serve(argc > 1 ? atof(argv[1]) : 10);
	return 0;
}
