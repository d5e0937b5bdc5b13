/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Stacks delivered once, for probes that aggregate in the kernel (memleak,
 * offcpu); included after common.h and unwind.h. A stack's id is a hash
 * of its process (and thread, when the probe keeps threads apart) and its
 * addresses; the stack itself goes to user space through the `stacks`
 * ring buffer the first time the id is seen, so it can be resolved while
 * the process is alive, and the probe's maps hold only ids.
 */
#ifndef FLAMEPROBE_STACKS_H
#define FLAMEPROBE_STACKS_H

/* Dummy instances so the skeleton's BTF carries the shared types for Rust. */
struct stack_event _stack_event = {};
enum stack_flags _stack_flags = 0;

/* Stack ids already delivered to user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u8);
} seen_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} stacks SEC(".maps");

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static __always_inline __u64 mix(__u64 h, __u64 v)
{
	return (h ^ v) * FNV_PRIME;
}

/* Hash of the process, the thread (0 when not kept apart) and both
 * stacks: the same stack in another process is another id (its addresses
 * mean something else there). A global function: verified once. */
__noinline __u64 stack_hash(struct stack_event *ev)
{
	if (!ev)
		return 0;
	__u64 h = mix(mix(FNV_OFFSET, ev->pid), ev->tid);
	__u32 kn = ev->kstack_len > 0 ? (__u32)ev->kstack_len / 8 : 0;
	__u32 un = ev->ustack_len > 0 ? (__u32)ev->ustack_len / 8 : 0;
	int i;

	h = mix(h, kn);
	bpf_for(i, 0, FP_MAX_STACK_DEPTH) {
		if (i >= kn)
			break;
		h = mix(h, ev->kstack[i]);
	}
	h = mix(h, un);
	bpf_for(i, 0, FP_MAX_STACK_DEPTH) {
		if (i >= un)
			break;
		h = mix(h, ev->ustack[i]);
	}
	return h | 1; /* never 0: 0 means "no stack" */
}

/* Gives the stack its id and delivers it the first time it is seen. */
static __always_inline __u64 publish_stack(struct stack_event *ev)
{
	__u64 id = stack_hash(ev);
	if (bpf_map_lookup_elem(&seen_stacks, &id))
		return id;
	ev->kind = RECORD_STACK;
	ev->stack_id = id;
	struct task_struct *task = bpf_get_current_task_btf();
	BPF_CORE_READ_STR_INTO(&ev->proc_comm, task, group_leader, comm);
	if (bpf_ringbuf_output(&stacks, ev, sizeof(*ev), 0)) {
		/* Not marked seen: the next event with it tries again. */
		count(STAT_STACK_LOST);
		return id;
	}
	__u8 one = 1;
	bpf_map_update_elem(&seen_stacks, &id, &one, BPF_NOEXIST);
	return id;
}

/*
 * The current task's user stack, leaf first, into ev->ustack: with the
 * CFI rows of its process when user space loaded them, else its frame
 * pointers. `pc_first` puts the interrupted pc itself first (a thread
 * going off the CPU); without it the stack starts at the caller (an
 * allocator's entry, where the pc is the allocator itself).
 */
static __always_inline void user_stack(void *ctx, struct stack_event *ev, __u64 pc, __u64 sp,
				       __u64 bp, bool pc_first)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct unwind_proc *proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
	if (proc) {
		__u32 n;
		if (pc_first) {
			ev->ustack[0] = pc;
			n = 1 + unwind_user(proc, pc, sp, bp, ev->ustack, 1);
		} else {
			n = unwind_user(proc, pc, sp, bp, ev->ustack, 0);
		}
		ev->ustack_len = n * sizeof(__u64);
		ev->flags |= STACK_CFI;
		return;
	}
	ev->ustack_len = bpf_get_stack(ctx, ev->ustack, sizeof(ev->ustack), BPF_F_USER_STACK);
	if (!pc_first && ev->ustack_len >= 8) {
		/* At a function's entry the frame-pointer chain starts at the
		 * caller's caller; the return address at [sp] is the caller. */
		__u64 ret = 0;
		bpf_probe_read_user(&ret, sizeof(ret), (void *)sp);
		ev->ustack[0] = ret;
	}
}

#endif /* FLAMEPROBE_STACKS_H */
