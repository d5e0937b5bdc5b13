/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The in-kernel target filter, shared by every program (included once per
 * .bpf.c, after common.h): the whole machine, or the processes (tgids) in
 * the `targets` map; never flameprobe itself; with `filter_threads`, only
 * the threads in `target_threads` (--tid, --thread). With `follow_children`, a fork tracepoint adds the
 * new processes that targets create (`-- CMD` mode); threads need no entry
 * of their own (the filter is by process). An exit tracepoint removes a
 * process once its last thread has exited, so the map holds live targets
 * only, however many processes come and go.
 */
#ifndef FLAMEPROBE_TARGETS_H
#define FLAMEPROBE_TARGETS_H

/* Per-run settings, fixed between open and load. */
const volatile __u32 filter_mode = FILTER_ALL;
const volatile bool follow_children = false;
const volatile __u32 self_tgid = 0; /* flameprobe itself: never recorded */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* tgid */
	__type(value, __u8);
} targets SEC(".maps");

/* --tid / --thread: only these threads of the targets. */
const volatile bool filter_threads = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* thread id */
	__type(value, __u8);
} target_threads SEC(".maps");

/* Whether process `tgid` is profiled (whatever its threads). */
static __always_inline bool is_target(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (filter_mode == FILTER_ALL)
		return true;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* Whether thread `tid` of process `tgid` is profiled. */
static __always_inline bool is_target_thread(__u32 tgid, __u32 tid)
{
	if (!is_target(tgid))
		return false;
	return !filter_threads || bpf_map_lookup_elem(&target_threads, &tid) != NULL;
}

/* A target created a process: follow it (`-- CMD` mode). */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (!follow_children || filter_mode != FILTER_PIDS)
		return 0;
	__u32 child_tgid = child->tgid;
	if (child->pid != child_tgid)
		return 0; /* a new thread of a process we already know */
	__u32 parent_tgid = parent->tgid;
	if (!bpf_map_lookup_elem(&targets, &parent_tgid))
		return 0;
	__u8 one = 1;
	if (bpf_map_update_elem(&targets, &child_tgid, &one, BPF_ANY))
		count(STAT_TARGETS_FULL);
	return 0;
}

/* A target's last thread exited: forget the process (its pid may be
 * reused by an unrelated one). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	if (filter_mode != FILTER_PIDS)
		return 0;
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads of the process still run */
	__u32 tgid = task->tgid;
	bpf_map_delete_elem(&targets, &tgid);
	return 0;
}

#endif /* FLAMEPROBE_TARGETS_H */
