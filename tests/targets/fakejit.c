/* A process that runs "JIT code": it spins for about a millisecond every
 * 20 ms in anonymous executable memory mapped at the fixed address
 * 0x10000000000 (so one perf map names the code of every instance). With `jvm DIR` it also poses as a HotSpot JVM
 * that never answers: comm "java", DIR/libjvm.so mapped, SIGQUIT caught,
 * and a /tmp/.java_pid<pid> socket that accepts connections and never
 * replies. Prints "ready" once set up; exits when its stdin closes.
 * Usage: fakejit [jvm DIR] */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define JIT_ADDR ((void *)0x10000000000UL)

static int listener = -1;

static void *hold_connections(void *arg)
{
	(void)arg;
	for (;;) {
		/* Accepted and kept open: the peer waits for a reply forever. */
		if (accept(listener, NULL, NULL) < 0)
			sleep(1);
	}
	return NULL;
}

static void *exit_on_eof(void *arg)
{
	char buf[64];
	(void)arg;
	while (read(0, buf, sizeof buf) > 0)
		;
	_exit(0);
}

static void on_sigquit(int sig) { (void)sig; }

static void pose_as_jvm(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/libjvm.so", dir);
	int fd = open(path, O_RDONLY);
	if (fd < 0 || mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
		perror(path);
		exit(1);
	}
	prctl(PR_SET_NAME, "java");
	struct sigaction sa = { .sa_handler = on_sigquit };
	sigaction(SIGQUIT, &sa, NULL);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(addr.sun_path, sizeof addr.sun_path, "/tmp/.java_pid%d", getpid());
	unlink(addr.sun_path);
	listener = socket(AF_UNIX, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
	    listen(listener, 64) < 0) {
		perror(addr.sun_path);
		exit(1);
	}
	pthread_t t;
	pthread_create(&t, NULL, hold_connections, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "jvm") == 0)
		pose_as_jvm(argv[2]);
	unsigned char *code = mmap(JIT_ADDR, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (code != JIT_ADDR) {
		perror("mmap");
		return 1;
	}
	/* mov ecx, 20000; spin: pause; dec ecx; jnz spin; ret */
	static const unsigned char spin[] = { 0xb9, 0x20, 0x4e, 0x00, 0x00, 0xf3, 0x90,
					      0xff, 0xc9, 0x75, 0xfa, 0xc3 };
	memcpy(code, spin, sizeof spin);
	pthread_t t;
	pthread_create(&t, NULL, exit_on_eof, NULL);
	printf("ready\n");
	fflush(stdout);
	/* About a millisecond in the JIT code, then 20 ms asleep: sampled
	 * there, at little cost to the machine. */
	for (;;) {
		((void (*)(void))code)();
		usleep(20000);
	}
}
