/* flameprobe test target: spins forever on the CPU in named functions, to be
 * run in a root of its own as a static binary (tests/suite/target_root.rs).
 *
 *   rootspin                 spin
 *   rootspin --root DIR      enter DIR as a container runtime does (a new
 *                            mount namespace, DIR bind-mounted and made the
 *                            root with pivot_root, the old root detached),
 *                            then exec /prog there (a copy of this program):
 *                            its maps then show /prog, not the host's path.
 *
 * Built with -DPLANTED it is "a different ELF" whose functions have other
 * names, planted at the target's path to check that flameprobe never uses
 * it. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NOIPA __attribute__((noinline, noipa))

#ifdef PLANTED
#define HOT planted_only_hot
#define OUTER planted_only_outer
#else
#define HOT rootspin_hot
#define OUTER rootspin_outer
#endif

volatile unsigned long sink;

NOIPA void HOT(void)
{
	for (unsigned long i = 0; i < 100000; i++)
		sink += i * i;
}

NOIPA void OUTER(void)
{
	HOT();
	sink++;
}

static int fail(const char *what)
{
	perror(what);
	return 1;
}

static int enter_root(const char *dir)
{
	if (unshare(CLONE_NEWNS) != 0)
		return fail("unshare");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return fail("mount --make-rprivate /");
	if (mount(dir, dir, NULL, MS_BIND, NULL) != 0)
		return fail("mount --bind");
	if (chdir(dir) != 0)
		return fail("chdir");
	if (syscall(SYS_pivot_root, ".", ".") != 0)
		return fail("pivot_root");
	if (umount2(".", MNT_DETACH) != 0)
		return fail("umount the old root");
	if (chdir("/") != 0)
		return fail("chdir /");
	execl("/prog", "prog", (char *)NULL);
	return fail("exec /prog");
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--root") == 0)
		return enter_root(argv[2]);
	for (;;)
		OUTER();
}
