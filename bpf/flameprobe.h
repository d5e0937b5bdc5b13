/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one place for every struct, enum and constant that crosses the
 * kernel/user boundary. Rust sees these through the skeleton-generated
 * `types` module (each struct has a dummy global instance in a .bpf.c file
 * so that its BTF is emitted); there is no hand-written Rust twin.
 */
#ifndef FLAMEPROBE_H
#define FLAMEPROBE_H

/* Deepest kernel or frame-pointer user stack captured by bpf_get_stack. */
#define FP_MAX_STACK_DEPTH 127
#define TASK_COMM_LEN 16

/* Largest user-stack copy (bytes) for DWARF unwinding: bounded by the
 * verifier's loop budget and the ring buffer record size. */
#define MAX_STACK_COPY (64 * 1024)
#define STACK_COPY_PAGE 4096

/* Record kinds, first field of every ring-buffer record. */
enum record_kind {
	RECORD_CPU_SAMPLE = 1,
};

/* How the in-kernel target filter decides. */
enum filter_mode {
	FILTER_ALL = 0,      /* every task (whole machine) */
	FILTER_PIDS = 1,     /* tgid in the `targets` map */
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

/* Counters in the per-CPU `stats` array. */
enum stat_idx {
	STAT_SAMPLES = 0,    /* samples that passed the filter */
	STAT_LOST = 1,       /* ring buffer full: sample dropped */
	STAT_COPY_FAILED = 2,/* user stack copy failed entirely */
	STAT_MAX = 4,
};

#endif /* FLAMEPROBE_H */
