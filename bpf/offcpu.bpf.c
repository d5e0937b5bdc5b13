// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Off-CPU time: at sched_switch, a target thread going off the CPU (prev,
 * which is `current` here) leaves the time and its stack in
 * `offcpu_start`, keyed by thread id (threads migrate: no per-CPU maps);
 * when it is switched in again (next), the time it was away is added to
 * its (thread, stack) total in `offcpu_totals`. Everything is aggregated
 * in the kernel; stacks travel to user space once each (stacks.h). User
 * space reads the totals at the end, and the threads still away then. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "flameprobe.h"
#include "common.h"
#include "targets.h"
#include "unwind.h"
#include "stacks.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Per-run settings, fixed between open and load. */
const volatile __u64 min_block_ns = 1000;      /* --min-block */
const volatile __u32 state_filter = OFFCPU_STATE_ALL; /* --state */
const volatile bool user_stacks = true;        /* false: kernel stacks only */

/* Dummy instances so the skeleton's BTF carries the shared types for Rust. */
struct offcpu_start _offcpu_start = {};
struct offcpu_key _offcpu_key = {};
struct offcpu_value _offcpu_value = {};
struct blocked_task _blocked_task = {};
enum offcpu_states _offcpu_states = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16); /* resized from user space */
	__type(key, __u32);           /* thread id */
	__type(value, struct offcpu_start);
} offcpu_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18); /* resized from user space */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct offcpu_key);
	__type(value, struct offcpu_value);
} offcpu_totals SEC(".maps");

/* Scratch for building a stack (tracepoints run with preemption off). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_event);
} scratch SEC(".maps");

/* Frames of a tp_btf program's own call at the top of a kernel stack: the
 * program and bpf_trace_run<N>. */
#define TRACEPOINT_FRAMES 2

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct blocked_task);
} blocked_scratch SEC(".maps");

#define TASK_INTERRUPTIBLE 0x1
#define TASK_UNINTERRUPTIBLE 0x2
#define TASK_NOLOAD 0x400

/* Whether --state keeps a thread that left the CPU in `state`. */
static __always_inline bool state_wanted(__u32 state)
{
	switch (state_filter) {
	case OFFCPU_STATE_SLEEP:
		return state & TASK_INTERRUPTIBLE;
	case OFFCPU_STATE_DISK:
		/* D state, but not the idle waits of kernel threads. */
		return (state & TASK_UNINTERRUPTIBLE) && !(state & TASK_NOLOAD);
	default:
		return true;
	}
}

/* The stack of `prev` (the current task), published once. */
static __always_inline __u64 current_stack(void *ctx, struct task_struct *prev)
{
	__u32 zero = 0;
	struct stack_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	ev->pid = prev->tgid;
	ev->tid = prev->pid;
	ev->flags = 0;
	__builtin_memcpy(ev->comm, prev->comm, sizeof(ev->comm));
	/* Skip this program and the tracepoint's trampoline: the stack
	 * starts in the scheduler. */
	ev->kstack_len = bpf_get_stack(ctx, ev->kstack, sizeof(ev->kstack), TRACEPOINT_FRAMES);
	ev->ustack_len = 0;
	if (user_stacks && !no_user_context(prev)) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);
		user_stack(ctx, ev, BPF_CORE_READ(regs, ip), BPF_CORE_READ(regs, sp),
			   BPF_CORE_READ(regs, bp), true);
	}
	return publish_stack(ev);
}

static __always_inline void switched_out(void *ctx, struct task_struct *prev, __u32 state,
					 __u64 now)
{
	count(STAT_SWITCHES);
	struct offcpu_start st = {
		.ts = now,
		.woken = 0,
		.pid = prev->tgid,
		.state = state,
		/* A state --state leaves out keeps no stack: its time is only
		 * counted as left out. */
		.stack_id = state_wanted(state) ? current_stack(ctx, prev) : 0,
	};
	__u32 tid = prev->pid;
	if (bpf_map_update_elem(&offcpu_start, &tid, &st, BPF_ANY))
		count(STAT_START_FULL);
}

static __always_inline void add(__u32 idx, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&stats, &idx);
	if (p)
		*p += v;
}

static __always_inline void switched_in(__u32 tid, struct offcpu_start *st, __u64 now)
{
	__u64 away = now - st->ts;
	/* Once woken, a sleeping thread is runnable: with a --state that
	 * asks for sleep or disk waits, the time it then waited for a CPU is
	 * another state, left out. */
	if (state_filter != OFFCPU_STATE_ALL && st->woken && st->woken <= now && st->state) {
		add(STAT_STATE_NS, now - st->woken);
		away = st->woken - st->ts;
	}
	if (!st->stack_id) {
		add(STAT_STATE_NS, away);
		return;
	}
	if (away < min_block_ns) {
		add(STAT_SHORT_NS, away);
		count(STAT_SHORT);
		return;
	}
	struct offcpu_key key = { .pid = st->pid, .tid = tid, .stack_id = st->stack_id };
	struct offcpu_value *v = bpf_map_lookup_elem(&offcpu_totals, &key);
	if (v) {
		__sync_fetch_and_add(&v->ns, away);
		__sync_fetch_and_add(&v->count, 1);
		return;
	}
	struct offcpu_value init = { .ns = away, .count = 1 };
	if (bpf_map_update_elem(&offcpu_totals, &key, &init, BPF_NOEXIST)) {
		/* Another CPU created it meanwhile, or the map is full. */
		v = bpf_map_lookup_elem(&offcpu_totals, &key);
		if (v) {
			__sync_fetch_and_add(&v->ns, away);
			__sync_fetch_and_add(&v->count, 1);
		} else {
			count(STAT_TOTALS_FULL);
		}
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev_tid = prev->pid;
	if (prev_tid && is_target_thread(prev->tgid, prev_tid))
		switched_out(ctx, prev, prev_state, now);

	__u32 next_tid = next->pid;
	struct offcpu_start *st = bpf_map_lookup_elem(&offcpu_start, &next_tid);
	if (st) {
		switched_in(next_tid, st, now);
		bpf_map_delete_elem(&offcpu_start, &next_tid);
	}
	return 0;
}

/* A thread off the CPU becomes runnable: note when (see switched_in). */
SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
	__u32 tid = p->pid;
	struct offcpu_start *st = bpf_map_lookup_elem(&offcpu_start, &tid);
	if (st && !st->woken)
		st->woken = bpf_ktime_get_ns();
	return 0;
}

/* Reports the target threads that are off the CPU now (run once, when the
 * recording starts): their time off the CPU began before on_switch saw
 * them leave. */
SEC("iter/task")
int blocked_now(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	__u32 tid = task->pid, tgid = task->tgid;
	if (!tid || !is_target_task_thread(task))
		return 0;
	unsigned int state = BPF_CORE_READ(task, __state);
	if (state == 0 || !state_wanted(state))
		return 0; /* running or runnable, or left out by --state */
	__u32 zero = 0;
	struct blocked_task *b = bpf_map_lookup_elem(&blocked_scratch, &zero);
	if (!b)
		return 0;
	b->pid = tgid;
	b->tid = tid;
	b->state = state;
	b->kstack_len = bpf_get_task_stack(task, b->kstack, sizeof(b->kstack), 0);
	b->ip = b->sp = b->bp = 0;
	if (!no_user_context(task)) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
		b->ip = BPF_CORE_READ(regs, ip);
		b->sp = BPF_CORE_READ(regs, sp);
		b->bp = BPF_CORE_READ(regs, bp);
	}
	__builtin_memcpy(b->comm, task->comm, sizeof(b->comm));
	BPF_CORE_READ_STR_INTO(&b->proc_comm, task, group_leader, comm);
	bpf_seq_write(ctx->meta->seq, b, sizeof(*b));
	return 0;
}
