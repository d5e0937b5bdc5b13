/* Test target for --probe kmemleak: makes the kernel hold memory for a
 * known reason. During the recording it creates sockets that it keeps
 * open (the kernel keeps their socket structures) and pipes that it closes
 * again (the kernel frees them).
 *
 *   main -> hold_sockets -> socketpair   HOLD pairs, kept open until exit
 *   main -> release_pipes -> pipe, close ROUNDS x HOLD pipes, closed
 *
 * Protocol: prints "ready", waits for a line on stdin, works, prints
 * "done", waits for stdin to close, exits. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))
#define HOLD 64
#define ROUNDS 20

int held[HOLD][2];

NOIPA void hold_sockets(void)
{
	for (int i = 0; i < HOLD; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, held[i]))
			exit(2);
}

NOIPA void release_pipes(void)
{
	int fds[HOLD][2];
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < HOLD; i++)
			if (pipe(fds[i]))
				exit(3);
		for (int i = 0; i < HOLD; i++) {
			if (write(fds[i][1], "x", 1) != 1)
				exit(4);
			close(fds[i][0]);
			close(fds[i][1]);
		}
	}
}

int main(void)
{
	char buf[64];
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Warm the caches the released path uses, so that it needs no new
	 * slab pages while recorded. */
	release_pipes();
	printf("ready\n");
	if (!fgets(buf, sizeof(buf), stdin))
		return 1;
	hold_sockets();
	release_pipes();
	printf("done\n");
	while (getchar() != EOF)
		;
	return 0;
}
