/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The in-kernel target filter, shared by every program (included once per
 * .bpf.c, after common.h); never flameprobe itself; with `filter_threads`,
 * only the threads in `target_threads` (--tid, --thread). Modes:
 *
 * FILTER_ALL: the whole machine.
 * FILTER_PIDS: the processes (tgids) in the `targets` map. With
 *   `follow_children`, a fork tracepoint adds the new processes that
 *   targets create (`-- CMD` mode, containers without a cgroup of their
 *   own); threads need no entry of their own (the filter is by process).
 *   An exit tracepoint removes a process once its last thread has exited,
 *   so the map holds live targets only, however many processes come and go.
 * FILTER_CGROUPS: tasks whose cgroup v2 (the unified hierarchy) is one of
 *   the `target_cgroups` (containers) or below one. A container's cgroup
 *   sits at some depth (`cgroup_levels`, usually one for every container);
 *   the task's ancestor at that depth is its own cgroup or the one that
 *   holds it, so one helper call and one lookup per distinct depth decide,
 *   for processes that exist now and every one started later.
 */
#ifndef FLAMEPROBE_TARGETS_H
#define FLAMEPROBE_TARGETS_H

/* Per-run settings, fixed between open and load. */
const volatile __u32 filter_mode = FILTER_ALL;
const volatile bool follow_children = false;
const volatile __u32 self_tgid = 0; /* flameprobe itself: never recorded */
/* FILTER_CGROUPS: the distinct levels (root = 0) of the target cgroups. */
const volatile __u32 cgroup_levels[MAX_CGROUP_LEVELS] = {};
const volatile __u32 cgroup_level_count = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* tgid */
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);   /* cgroup v2 id (kernfs node id) */
	__type(value, __u8);
} target_cgroups SEC(".maps");

/* --tid / --thread: only these threads of the targets. */
const volatile bool filter_threads = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* thread id */
	__type(value, __u8);
} target_threads SEC(".maps");

/* Whether thread `tid` passes --tid / --thread. */
static __always_inline bool thread_wanted(__u32 tid)
{
	return !filter_threads || bpf_map_lookup_elem(&target_threads, &tid) != NULL;
}

/* Whether the current task, of process `tgid`, is profiled. */
static __always_inline bool is_target(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (filter_mode == FILTER_ALL)
		return true;
	if (filter_mode == FILTER_CGROUPS) {
#pragma unroll
		for (int i = 0; i < MAX_CGROUP_LEVELS; i++) {
			if (i >= cgroup_level_count)
				break;
			/* 0 when the task's cgroup is above that level. */
			__u64 id = bpf_get_current_ancestor_cgroup_id(cgroup_levels[i]);
			if (id && bpf_map_lookup_elem(&target_cgroups, &id))
				return true;
		}
		return false;
	}
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* Whether `task` (any task, not only the current one: e.g. both sides of
 * a context switch) is profiled; the same decision as is_target(), read
 * from the task (its v2 cgroup is task->cgroups->dfl_cgrp, whose ancestor
 * at level L is ancestors[L], as the helpers above see it). */
static __always_inline bool is_target_task(struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);

	if (tgid == self_tgid)
		return false;
	if (filter_mode == FILTER_ALL)
		return true;
	if (filter_mode == FILTER_CGROUPS) {
		struct cgroup *cgrp = BPF_CORE_READ(task, cgroups, dfl_cgrp);
		__u32 depth = BPF_CORE_READ(cgrp, level);
#pragma unroll
		for (int i = 0; i < MAX_CGROUP_LEVELS; i++) {
			if (i >= cgroup_level_count)
				break;
			__u32 level = cgroup_levels[i];
			if (level > depth)
				continue;
			struct cgroup *ancestor = NULL;
			bpf_core_read(&ancestor, sizeof(ancestor), &cgrp->ancestors[level]);
			__u64 id = BPF_CORE_READ(ancestor, kn, id);
			if (id && bpf_map_lookup_elem(&target_cgroups, &id))
				return true;
		}
		return false;
	}
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* Whether the current task, thread `tid` of process `tgid`, is profiled. */
static __always_inline bool is_target_thread(__u32 tgid, __u32 tid)
{
	return is_target(tgid) && thread_wanted(tid);
}

/* Whether `task` (any task) is profiled, threads filter included. */
static __always_inline bool is_target_task_thread(struct task_struct *task)
{
	return is_target_task(task) && thread_wanted(BPF_CORE_READ(task, pid));
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
