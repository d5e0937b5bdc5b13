// flameprobe test target: a process whose root is a directory (chroot), for
// reading files "inside its root" (tests/suite/jit.rs). Usage: chrooted DIR.
// Prints "ready" once chrooted, then waits until its stdin closes.
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    if (chroot(argv[1]) != 0 || chdir("/") != 0) {
        perror("chroot");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
