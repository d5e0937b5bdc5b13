// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Memory leaks: every allocation made during the recording is kept in the
 * `allocs` hash map (address -> size, time, stack id) until it is freed, all
 * in the kernel; user space reads what is still outstanding at the end.
 * Stacks travel through the ring buffer once each, the first time they are
 * seen, so the per-event cost is a couple of hash operations.
 *
 * User allocators: one uprobe *session* program for every allocator entry
 * point, told which one by the attach cookie (entry and return in one
 * program; an entry that returns 1 skips the return probe, which is how
 * sampled mode stays cheap), plus an entry-only uprobe on the free family.
 * One program means the verifier checks the stack unwinder once. Kernel:
 * the kmem tracepoints. */
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

/* Per-run settings, fixed between open and load (the target filter's are
 * in targets.h). */
/* 0: exact tracking; otherwise sample each byte with probability 1/N. */
const volatile __u64 sample_bytes = 0;
/* kmemleak: also record the user stack of the allocating task. */
const volatile bool kernel_user_stacks = false;
/* kmemleak: allocations made in interrupt context (hardirq, softirq, NMI)
 * belong to no task; with a target filter they are left out, for the
 * whole machine they are kept without a process. */
const volatile bool kernel_skip_irq = false;
/* kmemleak: address ranges of kernel functions that decide about an
 * allocation with them on its kernel stack, sorted, with what each is
 * (enum kernel_range_kind):
 * - the kernel's BPF allocator (its memory caches, refilled from irq_work;
 *   map and local-storage elements): BPF's own memory (ours, or another
 *   tracer's), never recorded. Recording it would insert into a BPF map,
 *   which can make the allocator refill again: a loop of irq_work that
 *   stalls the CPU;
 * - interrupt entries (idtentry stubs, softirq processing): interrupt
 *   context. (x86's preempt_count would say it too, but it is a per-CPU
 *   variable whose address kallsyms gives only with CONFIG_KALLSYMS_ALL,
 *   and the program's own stack may be a private one.) */
const volatile __u64 kernel_ranges[2 * MAX_KERNEL_RANGES] = {};
const volatile __u8 kernel_range_kinds[MAX_KERNEL_RANGES] = {};
const volatile __u32 kernel_range_count = 0;

/* Dummy instances so the skeleton's BTF carries the shared types for Rust. */
enum alloc_kind _alloc_kind = 0;
enum alloc_space _alloc_space = 0;
struct alloc_key _alloc_key = {};
struct alloc_info _alloc_info = {};
struct exec_event _exec_event = {};
enum kernel_range_kind _kernel_range_kind = 0;

extern bool bpf_session_is_return(void) __ksym __weak;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20); /* resized from user space */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct alloc_key);
	__type(value, struct alloc_info);
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct alloc_thread);
} threads SEC(".maps");

/* Exponential variates with mean `sample_bytes`, filled by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SAMPLE_TABLE_SIZE);
	__type(key, __u32);
	__type(value, __u64);
} sample_table SEC(".maps");

/* Scratch for kernel stacks (tracepoints run with preemption disabled). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_event);
} kscratch SEC(".maps");

static __always_inline void record(__u32 tgid, __u32 space, __u64 addr, __u64 size, __u64 stack)
{
	struct alloc_key key = { .tgid = tgid, .space = space, .addr = addr };
	struct alloc_info info = { .size = size, .ts = bpf_ktime_get_ns(), .stack_id = stack };
	if (bpf_map_update_elem(&allocs, &key, &info, BPF_ANY))
		count(STAT_MAP_FULL);
	else
		count(STAT_ALLOCS);
}

static __always_inline void forget(__u32 tgid, __u32 space, __u64 addr)
{
	struct alloc_key key = { .tgid = tgid, .space = space, .addr = addr };
	if (bpf_map_delete_elem(&allocs, &key) == 0)
		count(STAT_FREES);
}

/* ------------------------------------------------------------------ */
/* User-space allocators                                               */
/* ------------------------------------------------------------------ */

static __always_inline __u64 next_countdown(void)
{
	__u32 idx = bpf_get_prandom_u32() & (SAMPLE_TABLE_SIZE - 1);
	__u64 *v = bpf_map_lookup_elem(&sample_table, &idx);
	return v ? *v : sample_bytes;
}

/* Entry of an allocator call. Returns 1 to skip the return probe. */
static __always_inline int alloc_enter(struct pt_regs *ctx, __u32 kind, __u64 size, __u64 ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;

	if (!is_target_thread(tgid, (__u32)id))
		return 1;
	struct alloc_thread *st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
						       BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st) {
		count(STAT_NO_STATE);
		return 1;
	}
	/* An allocator calling another one (realloc(NULL, n) -> malloc):
	 * the outer call accounts for it. */
	if (st->pending_kind != ALLOC_NONE)
		return 1;

	bool sampled = true;
	if (sample_bytes) {
		if (!st->countdown_set) {
			st->countdown = next_countdown();
			st->countdown_set = 1;
		}
		if ((__s64)size < st->countdown) {
			st->countdown -= size;
			sampled = false;
		} else {
			st->countdown = next_countdown();
		}
	}
	bool reallocating = (kind == ALLOC_REALLOC || kind == ALLOC_REALLOCARRAY) && ptr;
	if (!sampled && !reallocating)
		return 1; /* the cheap path: no stack, no return probe */

	__u64 stack = 0;
	if (sampled) {
		struct stack_event *ev = &st->scratch;
		ev->pid = tgid;
		ev->tid = 0;
		ev->kstack_len = 0;
		ev->flags = 0;
		user_stack(ctx, ev, PT_REGS_IP(ctx), PT_REGS_SP(ctx), PT_REGS_FP(ctx), false);
		stack = publish_stack(ev);
	}
	st->pending_kind = kind;
	st->pending_sampled = sampled;
	st->pending_size = size;
	st->pending_ptr = ptr;
	st->pending_stack = stack;
	return 0;
}

static __always_inline int alloc_exit(struct pt_regs *ctx)
{
	struct alloc_thread *st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	if (!st || st->pending_kind == ALLOC_NONE)
		return 0;
	__u32 kind = st->pending_kind;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 ret = PT_REGS_RC(ctx);
	__u64 addr = ret;
	st->pending_kind = ALLOC_NONE;

	if (kind == ALLOC_REALLOC || kind == ALLOC_REALLOCARRAY) {
		/* Success (or realloc(p, 0), which frees) releases the old block. */
		if (st->pending_ptr && (ret || st->pending_size == 0))
			forget(tgid, SPACE_USER, st->pending_ptr);
	} else if (kind == ALLOC_POSIX_MEMALIGN) {
		addr = 0;
		if ((int)ret == 0)
			bpf_probe_read_user(&addr, sizeof(addr), (void *)st->pending_ptr);
	}
	if (addr && st->pending_sampled)
		record(tgid, SPACE_USER, addr, st->pending_size, st->pending_stack);
	return 0;
}

static __always_inline __u64 mul_size(__u64 n, __u64 size)
{
	/* Overflowing requests fail in the allocator (NULL): never recorded. */
	__u64 p = n * size;
	asm volatile("" : "+r"(p)); /* keep clang from using 128-bit math */
	if (size && p / size != n)
		return ~0ULL;
	return p;
}

/* Every allocator entry point; the attach cookie says which kind. */
SEC("uprobe.session")
int on_alloc(struct pt_regs *ctx)
{
	if (bpf_session_is_return())
		return alloc_exit(ctx);
	__u64 a1 = PT_REGS_PARM1(ctx), a2 = PT_REGS_PARM2(ctx), a3 = PT_REGS_PARM3(ctx);
	__u32 kind = bpf_get_attach_cookie(ctx);
	__u64 size, ptr = 0;
	switch (kind) {
	case ALLOC_MALLOC:
		size = a1;
		break;
	case ALLOC_CALLOC:
		size = mul_size(a1, a2);
		break;
	case ALLOC_REALLOC:
		size = a2;
		ptr = a1;
		break;
	case ALLOC_REALLOCARRAY:
		size = mul_size(a2, a3);
		ptr = a1;
		break;
	case ALLOC_POSIX_MEMALIGN:
		size = a3;
		ptr = a1;
		break;
	case ALLOC_MEMALIGN:
		size = a2;
		break;
	default:
		return 1;
	}
	return alloc_enter(ctx, kind, size, ptr);
}

/* free(ptr) and its relatives that take the pointer first (cfree,
 * free_sized, sdallocx): one hash delete, entry only. free(NULL) and
 * blocks allocated before the recording find nothing to delete. */
SEC("uprobe.multi")
int on_free(struct pt_regs *ctx)
{
	__u64 ptr = PT_REGS_PARM1(ctx);
	if (!ptr)
		return 0;
	forget(bpf_get_current_pid_tgid() >> 32, SPACE_USER, ptr);
	return 0;
}

/* `-- CMD` mode: the command's executable reached its entry point (its
 * libraries are mapped now). Stop it and tell user space, which loads the
 * unwind tables of what it maps and lets it continue (SIGCONT). */
SEC("uprobe")
int on_entry(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_target(tgid))
		return 0;
	struct exec_event ev = { .kind = RECORD_EXEC, .pid = tgid };
	if (bpf_ringbuf_output(&stacks, &ev, sizeof(ev), BPF_RB_FORCE_WAKEUP) == 0)
		bpf_send_signal(SIGSTOP);
	return 0;
}

/* `-- CMD` mode: a target exec'd a new program, whose allocator may be
 * another (LD_PRELOAD, a static binary). Stop it before its first
 * instruction and tell user space, which probes the new program's
 * allocators (and its entry point) and lets it continue. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p)
{
	__u32 tgid = p->tgid;
	if (!follow_children || !is_target(tgid))
		return 0;
	struct exec_event ev = { .kind = RECORD_NEW_IMAGE, .pid = tgid };
	if (bpf_ringbuf_output(&stacks, &ev, sizeof(ev), BPF_RB_FORCE_WAKEUP) == 0)
		bpf_send_signal(SIGSTOP);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Kernel allocators (kmem tracepoints)                                */
/* ------------------------------------------------------------------ */

/* What a kernel stack passes through: a bit per enum kernel_range_kind.
 * A global function: verified once. */
__noinline __u32 kernel_stack_marks(struct stack_event *ev)
{
	__u32 marks = 0;
	int i, j;

	if (!ev || !kernel_range_count)
		return 0;
	__u32 n = ev->kstack_len > 0 ? (__u32)ev->kstack_len / 8 : 0;
	bpf_for(i, 0, FP_MAX_STACK_DEPTH) {
		if (i >= n)
			break;
		__u64 a = ev->kstack[i];
		/* The last range starting at or below a (binary search). */
		__u32 lo = 0, hi = kernel_range_count;
		if (hi > MAX_KERNEL_RANGES)
			hi = MAX_KERNEL_RANGES;
		bpf_for(j, 0, 6) {
			if (lo >= hi)
				break;
			__u32 mid = ((lo + hi) / 2) & (MAX_KERNEL_RANGES - 1);
			if (kernel_ranges[2 * mid] <= a)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0)
			continue;
		__u32 r = (lo - 1) & (MAX_KERNEL_RANGES - 1);
		if (a < kernel_ranges[2 * r + 1])
			marks |= 1u << (kernel_range_kinds[r] & 31);
	}
	return marks;
}

static __always_inline void kernel_alloc(void *ctx, __u32 space, __u64 addr, __u64 size)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!addr || !is_target_thread(tgid, (__u32)id))
		return;
	__u32 zero = 0;
	struct stack_event *ev = bpf_map_lookup_elem(&kscratch, &zero);
	if (!ev)
		return;
	ev->pid = tgid;
	ev->tid = 0;
	ev->flags = 0;
	ev->kstack_len = bpf_get_stack(ctx, ev->kstack, sizeof(ev->kstack), 0);
	__u32 marks = kernel_stack_marks(ev);
	if (marks & (1u << RANGE_BPF_ALLOCATOR)) {
		count(STAT_BPF_SELF);
		return;
	}
	if (marks & (1u << RANGE_INTERRUPT)) {
		if (kernel_skip_irq) {
			count(STAT_IRQ_SKIPPED);
			return;
		}
		/* An interrupt's allocation is nobody's: whole-machine mode
		 * keeps it under the kernel (pid 0), whatever task it
		 * interrupted. */
		ev->pid = tgid = 0;
		ev->flags |= STACK_IRQ;
	}
	ev->ustack_len = 0;
	if (kernel_user_stacks && tgid) {
		struct task_struct *task = bpf_get_current_task_btf();
		if (!no_user_context(task))
			ev->ustack_len = bpf_get_stack(ctx, ev->ustack, sizeof(ev->ustack),
						       BPF_F_USER_STACK);
	}
	record(0, space, addr, size, publish_stack(ev));
}

SEC("tracepoint/kmem/kmalloc")
int on_kmalloc(struct trace_event_raw_kmalloc *ctx)
{
	kernel_alloc(ctx, SPACE_KSLAB, (__u64)BPF_CORE_READ(ctx, ptr), BPF_CORE_READ(ctx, bytes_alloc));
	return 0;
}

SEC("tracepoint/kmem/kmem_cache_alloc")
int on_kmem_cache_alloc(struct trace_event_raw_kmem_cache_alloc *ctx)
{
	kernel_alloc(ctx, SPACE_KSLAB, (__u64)BPF_CORE_READ(ctx, ptr), BPF_CORE_READ(ctx, bytes_alloc));
	return 0;
}

SEC("tracepoint/kmem/mm_page_alloc")
int on_page_alloc(struct trace_event_raw_mm_page_alloc *ctx)
{
	__u64 pfn = BPF_CORE_READ(ctx, pfn);
	if (pfn == ~0ULL)
		return 0;
	kernel_alloc(ctx, SPACE_KPAGE, pfn, 4096ULL << BPF_CORE_READ(ctx, order));
	return 0;
}

SEC("tracepoint/kmem/kfree")
int on_kfree(struct trace_event_raw_kfree *ctx)
{
	__u64 ptr = (__u64)BPF_CORE_READ(ctx, ptr);
	if (ptr)
		forget(0, SPACE_KSLAB, ptr);
	return 0;
}

SEC("tracepoint/kmem/kmem_cache_free")
int on_kmem_cache_free(struct trace_event_raw_kmem_cache_free *ctx)
{
	__u64 ptr = (__u64)BPF_CORE_READ(ctx, ptr);
	if (ptr)
		forget(0, SPACE_KSLAB, ptr);
	return 0;
}

SEC("tracepoint/kmem/mm_page_free")
int on_page_free(struct trace_event_raw_mm_page_free *ctx)
{
	forget(0, SPACE_KPAGE, BPF_CORE_READ(ctx, pfn));
	return 0;
}

SEC("tracepoint/kmem/mm_page_free_batched")
int on_page_free_batched(struct trace_event_raw_mm_page_free_batched *ctx)
{
	forget(0, SPACE_KPAGE, BPF_CORE_READ(ctx, pfn));
	return 0;
}
