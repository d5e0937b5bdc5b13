/* Captures its own user-stack sample the way flameprobe's BPF program does
 * (registers + a copy of the top of the stack) plus its memory map, for the
 * unwinder test that runs without root:
 * main -> level1 -> level2 -> level3 -> capture.
 * Usage: selfdump OUTDIR   (writes regs.txt, stack.bin, maps.txt) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOIPA __attribute__((noinline, noipa))
#define COPY (16 * 1024)

static unsigned char stack_copy[COPY];
volatile int sink;

static uint64_t stack_end(uint64_t sp)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	uint64_t lo, hi, end = sp;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo <= sp && sp < hi)
			end = hi;
	if (f)
		fclose(f);
	return end;
}

NOIPA void capture(const char *dir)
{
	uint64_t ip, sp, bp;
	__asm__ volatile("lea 0(%%rip), %0" : "=r"(ip));
	__asm__ volatile("mov %%rsp, %0" : "=r"(sp));
	__asm__ volatile("mov %%rbp, %0" : "=r"(bp));
	/* Calls made from here on only write below sp. */
	uint64_t end = stack_end(sp);
	size_t len = end - sp < COPY ? end - sp : COPY;
	memcpy(stack_copy, (void *)sp, len);

	char path[4096];
	snprintf(path, sizeof(path), "%s/regs.txt", dir);
	FILE *r = fopen(path, "w");
	fprintf(r, "%lx %lx %lx %d\n", ip, sp, bp, len < COPY);
	fclose(r);
	snprintf(path, sizeof(path), "%s/stack.bin", dir);
	FILE *s = fopen(path, "w");
	fwrite(stack_copy, 1, len, s);
	fclose(s);
	snprintf(path, sizeof(path), "%s/maps.txt", dir);
	FILE *out = fopen(path, "w"), *in = fopen("/proc/self/maps", "r");
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
	fclose(in);
	fclose(out);
}

NOIPA void level3(const char *d) { capture(d); sink++; }
NOIPA void level2(const char *d) { level3(d); sink++; }
NOIPA void level1(const char *d) { level2(d); sink++; }

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	level1(argv[1]);
	return 0;
}
