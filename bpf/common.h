/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What every program needs, written once: the per-CPU `stats` counters
 * (indices in enum stat_idx) and small task helpers. Included once per
 * .bpf.c, after vmlinux.h, the libbpf headers and flameprobe.h.
 */
#ifndef FLAMEPROBE_COMMON_H
#define FLAMEPROBE_COMMON_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Dummy instances so the skeleton's BTF carries the shared enums for Rust. */
enum limits _limits = 0;
enum stat_idx _stat_idx = 0;
enum record_kind _record_kind = 0;
enum filter_mode _filter_mode = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* A kernel thread (or a task without user memory): no user stack. */
static __always_inline bool no_user_context(struct task_struct *task)
{
	return (task->flags & PF_KTHREAD) || !task->mm;
}

#endif /* FLAMEPROBE_COMMON_H */
