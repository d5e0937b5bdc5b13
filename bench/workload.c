/* CPU-bound benchmark workload: hashes a buffer in a loop for SECONDS and
 * prints the number of rounds done (its throughput). Built like most
 * distribution binaries: -O2, no frame pointers. Usage: workload SECONDS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))

static unsigned char buf[4096];

NOINLINE uint64_t hash_block(const unsigned char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

NOINLINE uint64_t round_trip(uint64_t h)
{
	for (int i = 0; i < 4; i++)
		h = hash_block(buf, sizeof(buf), h);
	return h;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 10;
	struct timespec t0, t;
	uint64_t h = 1469598103934665603ULL, rounds = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (int i = 0; i < 64; i++, rounds++)
			h = round_trip(h);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
	printf("%llu %llu\n", (unsigned long long)rounds, (unsigned long long)h);
	return 0;
}
