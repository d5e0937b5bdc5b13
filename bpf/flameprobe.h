/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one place for every struct, enum and constant that crosses the
 * kernel/user boundary. Rust sees these through the skeleton-generated
 * `types` module (each struct has a dummy global instance in a .bpf.c file
 * so that its BTF is emitted); there is no hand-written Rust twin.
 */
#ifndef FLAMEPROBE_H
#define FLAMEPROBE_H

/*
 * Limits shared with user space. An enum rather than #defines so that Rust
 * sees them too (skeleton `types::limits`), from this one definition.
 */
enum limits {
	/* Deepest kernel or user stack captured (frames). */
	FP_MAX_STACK_DEPTH = 127,
	/* Largest user-stack copy (bytes) for DWARF unwinding: bounded by the
	 * verifier's loop budget and the ring buffer record size. */
	MAX_STACK_COPY = 64 * 1024,
	STACK_COPY_PAGE = 4096,
	/* A frame-pointer step is only taken when bp points into the stack no
	 * further than this above sp: code built without frame pointers
	 * leaves arbitrary values in bp, and walking them faults (slow). */
	MAX_FRAME_BYTES = 8 << 20,
	/* Lowest address user code can live at (mmap_min_addr >= 4 KiB):
	 * a smaller "return address" ends a stack. */
	MIN_CODE_ADDR = 0x1000,
	/* Distinct cgroup levels the cgroup filter checks (targets.h). */
	MAX_CGROUP_LEVELS = 4,
	/* kmemleak: kernel function ranges that classify an allocation by
	 * its stack (memleak.bpf.c); a power of two (binary search). */
	MAX_KERNEL_RANGES = 32,
};

/* What a kernel function range on an allocation's stack says about it. */
enum kernel_range_kind {
	RANGE_BPF_ALLOCATOR = 0,  /* BPF's own memory: left out */
	RANGE_INTERRUPT = 1,      /* made in interrupt context */
};

#define PF_KTHREAD 0x00200000 /* task->flags: a kernel thread */
#define SIGSTOP 19

/* Record kinds, first field of every ring-buffer record. */
enum record_kind {
	RECORD_CPU_SAMPLE = 1,
	RECORD_STACK = 2,      /* memleak: struct stack_event */
	RECORD_EXEC = 3,       /* memleak: struct exec_event, at the entry point */
	RECORD_NEW_IMAGE = 4,  /* memleak: struct exec_event, at exec */
};

/* How the in-kernel target filter decides. */
enum filter_mode {
	FILTER_ALL = 0,      /* every task (whole machine) */
	FILTER_PIDS = 1,     /* tgid in the `targets` map */
	FILTER_CGROUPS = 2,  /* cgroup v2 ancestor in the `target_cgroups` map */
};

/* sample_hdr.flags */
enum sample_flags {
	SAMPLE_USER_REGS = 1 << 0,   /* user registers valid */
	SAMPLE_KERNEL_THREAD = 1 << 1,
	SAMPLE_IN_KERNEL = 1 << 2,   /* interrupted in kernel mode */
	SAMPLE_STACK_END = 1 << 3,   /* the stack copy reached the stack's end */
};

/*
 * One on-CPU sample. In the ring buffer it is followed by `stack_copy_len`
 * bytes copied from the user stack starting at `sp` (DWARF unwinding).
 * Stack arrays hold `*_stack_len` valid bytes (bpf_get_stack's return
 * value) or a negative errno.
 */
struct sample_hdr {
	__u32 kind;
	__u32 pid;          /* tgid */
	__u32 tid;
	__u32 cpu;
	__u64 ts;           /* CLOCK_MONOTONIC ns */
	__u64 cgroup_id;
	__u32 flags;
	__s32 kstack_len;
	__s32 ustack_len;
	__u32 stack_copy_len;
	__u64 ip;           /* user registers at the sample */
	__u64 sp;
	__u64 bp;
	char comm[TASK_COMM_LEN];         /* thread name */
	char proc_comm[TASK_COMM_LEN];    /* process (group leader) name */
	__u64 kstack[FP_MAX_STACK_DEPTH];
	__u64 ustack[FP_MAX_STACK_DEPTH];
};

/* Counters in every program's per-CPU `stats` array (common.h); each
 * program uses the ones that concern it. */
enum stat_idx {
	/* target filter (targets.h) */
	STAT_TARGETS_FULL = 0, /* a child of a target not followed: map full */
	/* on-CPU sampling */
	STAT_SAMPLES = 1,      /* samples that passed the filter */
	STAT_LOST = 2,         /* ring buffer full: sample dropped */
	STAT_COPY_FAILED = 3,  /* user stack copy failed entirely */
	/* memleak */
	STAT_ALLOCS = 4,       /* allocations recorded */
	STAT_FREES = 5,        /* frees that matched a recorded allocation */
	STAT_MAP_FULL = 6,     /* allocation not recorded: outstanding map full */
	STAT_STACK_LOST = 7,   /* new stack not delivered: ring buffer full */
	STAT_NO_STATE = 8,     /* per-thread state unavailable: call not traced */
	/* offcpu */
	STAT_SWITCHES = 9,     /* target threads that went off the CPU */
	STAT_START_FULL = 10,  /* switch-out not recorded: offcpu_start full */
	STAT_TOTALS_FULL = 11, /* episode dropped: offcpu_totals full */
	STAT_STATE_NS = 12,    /* ns left out by --state */
	STAT_SHORT_NS = 13,    /* ns left out by --min-block */
	STAT_SHORT = 14,       /* episodes left out by --min-block */
	/* kmemleak */
	STAT_BPF_SELF = 15,    /* allocations of the kernel's BPF allocator, left out */
	STAT_IRQ_SKIPPED = 16, /* allocations in interrupt context, left out (-p, --container) */
	STAT_MAX = 17,
};

/* ---------------------------------------------------------------------
 * Stacks delivered once (stacks.h): probes that aggregate in the kernel
 * (memleak, offcpu) give every distinct stack an id, a hash of the
 * process, the thread when it matters and the addresses, and send the
 * stack itself through a ring buffer the first time it is seen.
 * ------------------------------------------------------------------- */

/* stack_event.flags */
enum stack_flags {
	STACK_CFI = 1 << 0,   /* user stack unwound with CFI rows */
	STACK_IRQ = 1 << 1,   /* kmemleak: taken in interrupt context (no process) */
};

/* A stack seen for the first time; sent through the ring buffer. */
struct stack_event {
	__u32 kind;        /* RECORD_STACK */
	__u32 pid;         /* tgid (0: kernel context without one) */
	__u32 tid;         /* the thread, when stacks are per thread; else 0 */
	__u32 flags;       /* enum stack_flags */
	__u64 stack_id;
	__s32 kstack_len;  /* bytes of kstack, or negative errno */
	__s32 ustack_len;  /* bytes of ustack, or negative errno */
	char comm[TASK_COMM_LEN];       /* thread name (when per thread) */
	char proc_comm[TASK_COMM_LEN];  /* process name */
	__u64 kstack[FP_MAX_STACK_DEPTH];
	/* User addresses, leaf first. With STACK_CFI they come from the
	 * in-kernel CFI unwinder; otherwise from frame pointers. At an
	 * allocator's entry (memleak) ustack[0] is the return address into
	 * the allocator's caller; elsewhere it is the interrupted pc. */
	__u64 ustack[FP_MAX_STACK_DEPTH];
};

/* ---------------------------------------------------------------------
 * Memory-leak probes (memleak.bpf.c): outstanding allocations are kept in
 * a hash map in the kernel; stacks are sent to user space once each.
 * ------------------------------------------------------------------- */

/* Entries in the exponential table used by --sample-bytes (power of 2). */
#define SAMPLE_TABLE_SIZE 4096

/* Which allocator entry point a uprobe sits on. */
enum alloc_kind {
	ALLOC_NONE = 0,
	ALLOC_MALLOC = 1,         /* malloc(size), valloc(size), pvalloc(size) */
	ALLOC_CALLOC = 2,         /* calloc(n, size) */
	ALLOC_REALLOC = 3,        /* realloc(ptr, size) */
	ALLOC_REALLOCARRAY = 4,   /* reallocarray(ptr, n, size) */
	ALLOC_POSIX_MEMALIGN = 5, /* posix_memalign(&ptr, align, size) */
	ALLOC_MEMALIGN = 6,       /* memalign/aligned_alloc(align, size) */
};

/* Address spaces of outstanding allocations (alloc_key.space). */
enum alloc_space {
	SPACE_USER = 0,    /* user-space block of process `tgid` */
	SPACE_KSLAB = 1,   /* kmalloc / kmem_cache object */
	SPACE_KPAGE = 2,   /* page-allocator block, addr = pfn */
};

struct alloc_key {
	__u32 tgid;        /* owning process (0 for kernel memory) */
	__u32 space;       /* enum alloc_space */
	__u64 addr;
};

/* One outstanding allocation. */
struct alloc_info {
	__u64 size;        /* bytes (requested for user blocks, allocated for kernel ones) */
	__u64 ts;          /* CLOCK_MONOTONIC ns at allocation */
	__u64 stack_id;    /* hash of (pid, stacks), delivered once as a stack_event */
};

/* A launched command reached its entry point and was stopped (SIGSTOP)
 * so that user space can load its unwind tables before it runs on. */
struct exec_event {
	__u32 kind;        /* RECORD_EXEC or RECORD_NEW_IMAGE */
	__u32 pid;         /* tgid */
};

/* Per-thread state of the user allocator probes (task storage). */
struct alloc_thread {
	__u32 pending_kind;     /* enum alloc_kind of the call in progress */
	__u32 pending_sampled;  /* record the result (0: realloc only frees) */
	__u64 pending_size;
	__u64 pending_ptr;      /* realloc: old block; posix_memalign: result slot */
	__u64 pending_stack;
	__s64 countdown;        /* bytes to the next sampled byte */
	__u64 countdown_set;
	struct stack_event scratch;
};

/* ---------------------------------------------------------------------
 * Off-CPU time (offcpu.bpf.c): at sched_switch, a target thread going off
 * the CPU leaves its time and stack; when it comes back, the time it was
 * away is added to its (thread, stack) total, all in the kernel.
 * ------------------------------------------------------------------- */

/* --state */
enum offcpu_states {
	OFFCPU_STATE_ALL = 0,    /* any reason to leave the CPU */
	OFFCPU_STATE_SLEEP = 1,  /* interruptible sleep (S) */
	OFFCPU_STATE_DISK = 2,   /* uninterruptible sleep (D), not idle waits */
};

/* A thread that went off the CPU (`offcpu_start`, keyed by thread id). */
struct offcpu_start {
	__u64 ts;          /* CLOCK_MONOTONIC ns when it left */
	__u64 woken;       /* when it was woken (runnable again), or 0 */
	__u64 stack_id;    /* 0: its state is left out by --state */
	__u32 pid;         /* tgid */
	__u32 state;       /* prev_state */
};

/* Blocked time per thread and stack (`offcpu_totals`). */
struct offcpu_key {
	__u32 pid;
	__u32 tid;
	__u64 stack_id;
};

struct offcpu_value {
	__u64 ns;          /* time off the CPU */
	__u64 count;       /* episodes */
};

/* A target thread already off the CPU when the recording starts (the task
 * iterator reports them, so that their time is not missed): its kernel
 * stack and user registers; user space reads and unwinds its user stack. */
struct blocked_task {
	__u32 pid;         /* tgid */
	__u32 tid;
	__u32 state;       /* task->__state */
	__s32 kstack_len;  /* bytes of kstack, or negative errno */
	__u64 ip;          /* user registers (0 for a kernel thread) */
	__u64 sp;
	__u64 bp;
	char comm[TASK_COMM_LEN];
	char proc_comm[TASK_COMM_LEN];
	__u64 kstack[FP_MAX_STACK_DEPTH];
};

/* ---------------------------------------------------------------------
 * In-kernel CFI unwinding (memleak's user stacks). User space compiles
 * each binary's .eh_frame into rows sorted by address, one row per address
 * range with the same rule; the BPF program finds a pc's module, searches
 * its rows and applies the rule. Code without rows falls back to frame
 * pointers.
 * ------------------------------------------------------------------- */

enum unwind_limits {
	UNWIND_MAX_MODULES = 64,   /* binaries per process with rows */
	UNWIND_MODULE_STEPS = 7,   /* binary-search steps over the modules */
	UNWIND_SEARCH_STEPS = 24,  /* binary-search steps over rows: 16M rows */
};

/* unwind_row.kind */
enum unwind_kind {
	UNWIND_NONE = 0,      /* no CFI for this range: try frame pointers */
	UNWIND_STOP = 1,      /* outermost frame (return address undefined) */
	UNWIND_CFA_RSP = 2,   /* CFA = rsp + cfa_off */
	UNWIND_CFA_RBP = 3,   /* CFA = rbp + cfa_off */
};

struct unwind_row {
	__u32 pc;          /* first address of the range, relative to the binary's load bias */
	__s32 cfa_off;
	__s16 rbp_off;     /* rbp saved at CFA + rbp_off; 0: rbp unchanged */
	__u8 kind;         /* enum unwind_kind */
	__u8 pad;
};

/* A binary mapped by a process, and its rows in the `unwind_rows` array. */
struct unwind_module {
	__u64 start;       /* address range of its mappings */
	__u64 end;
	__u64 bias;        /* load address minus link-time address */
	__u32 first;       /* index of its first row */
	__u32 count;
};

/* The binaries of one process, sorted by start (`unwind_procs` map). */
struct unwind_proc {
	__u32 count;
	__u32 pad;
	struct unwind_module mods[UNWIND_MAX_MODULES];
};

#endif /* FLAMEPROBE_H */
