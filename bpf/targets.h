/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The in-kernel target filter, shared by every program (included once per
 * .bpf.c, after flameprobe.h): the whole machine, or the tgids in the
 * `targets` map, which a fork tracepoint extends with the children of
 * targets in `-- CMD` mode.
 */
#ifndef FLAMEPROBE_TARGETS_H
#define FLAMEPROBE_TARGETS_H

/* Per-run settings, fixed between open and load. */
const volatile __u32 filter_mode = FILTER_ALL;
const volatile bool follow_children = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* tgid */
	__type(value, __u8);
} targets SEC(".maps");

/* Whether process `tgid` is profiled. */
static __always_inline bool is_target(__u32 tgid)
{
	if (filter_mode == FILTER_ALL)
		return true;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* Follow children of target processes (`-- CMD` mode). */
SEC("tracepoint/sched/sched_process_fork")
int on_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	if (!follow_children || filter_mode != FILTER_PIDS)
		return 0;
	__u32 parent_tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&targets, &parent_tgid))
		return 0;
	__u32 child = ctx->child_pid;
	__u8 one = 1;
	bpf_map_update_elem(&targets, &child, &one, BPF_ANY);
	return 0;
}

#endif /* FLAMEPROBE_TARGETS_H */
