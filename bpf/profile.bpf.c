// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* On-CPU sampling: a perf_event program on every CPU streams one record per
 * sample (kernel stack, frame-pointer user stack, user registers and an
 * optional copy of the top of the user stack) through a ring buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "flameprobe.h"
#include "common.h"
#include "targets.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Per-run settings, fixed between open and load (the target filter's are
 * in targets.h). */
const volatile bool include_idle = false;
const volatile __u32 stack_copy_size = 0; /* multiple of STACK_COPY_PAGE, <= MAX_STACK_COPY */
const volatile bool fp_user_stack = true;   /* walk user frame pointers */
const volatile __u64 wakeup_bytes = 1 << 20; /* wake the reader once this much waits */

/* Dummy instances so the skeleton's BTF carries the shared types for Rust. */
struct sample_hdr _sample_hdr = {};
enum sample_flags _sample_flags = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* resized from user space */
} events SEC(".maps");

static __always_inline bool wanted(__u32 tgid, __u32 tid)
{
	if (tgid == 0)
		return include_idle && filter_mode == FILTER_ALL && !filter_threads;
	return is_target_thread(tgid, tid);
}

/* Copy up to `size` (<= stack_copy_size) bytes of user stack from sp: the
 * rest of sp's page, whole pages, then the remainder, so that a stack whose
 * end is closer than `size` still yields every readable byte. Sets *ended
 * when a read failed (the stack's mapping ended). Returns the number of
 * bytes copied. */
static __always_inline __u32 copy_user_stack(__u8 *dst, __u64 sp, __u32 size, bool *ended)
{
	__u32 off = STACK_COPY_PAGE - (sp & (STACK_COPY_PAGE - 1));

	*ended = false;
	if (size > MAX_STACK_COPY)
		return 0;
	if (off > size)
		off = size;
	if (bpf_probe_read_user(dst, off, (void *)sp)) {
		*ended = true;
		return 0;
	}
	for (int i = 0; i < MAX_STACK_COPY / STACK_COPY_PAGE; i++) {
		if (off + STACK_COPY_PAGE > size || off > MAX_STACK_COPY - STACK_COPY_PAGE)
			break;
		if (bpf_probe_read_user(dst + off, STACK_COPY_PAGE, (void *)(sp + off))) {
			*ended = true;
			return off;
		}
		off += STACK_COPY_PAGE;
	}
	/* The record has a page of slack after the copy, so the verifier can
	 * prove off + rest in bounds once both are bounded on their own. */
	__u64 rest = size > off ? size - off : 0;
	__u64 at = off;
	barrier_var(rest);
	barrier_var(at);
	rest &= STACK_COPY_PAGE - 1;
	if (rest > 0 && at <= stack_copy_size) {
		if (bpf_probe_read_user(dst + at, rest, (void *)(sp + at)))
			*ended = true;
		else
			off += rest;
	}
	return off;
}

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;

	if (!wanted(tgid, tid))
		return 0;
	count(STAT_SAMPLES);

	struct sample_hdr *s = bpf_ringbuf_reserve(
		&events, sizeof(*s) + (stack_copy_size ? stack_copy_size + STACK_COPY_PAGE : 0), 0);
	if (!s) {
		count(STAT_LOST);
		return 0;
	}

	struct task_struct *task = bpf_get_current_task_btf();
	s->kind = RECORD_CPU_SAMPLE;
	s->pid = tgid;
	s->tid = tid;
	s->cpu = bpf_get_smp_processor_id();
	s->ts = bpf_ktime_get_ns();
	s->cgroup_id = bpf_get_current_cgroup_id();
	s->flags = 0;
	s->stack_copy_len = 0;
	s->ip = s->sp = s->bp = 0;
	s->kstack_len = 0;
	s->ustack_len = 0;
	bpf_get_current_comm(s->comm, sizeof(s->comm));
	BPF_CORE_READ_STR_INTO(&s->proc_comm, task, group_leader, comm);

	/* Interrupted in user mode: no kernel stack to walk, and the sampled
	 * registers are the user registers (read straight from the context). */
	/* (a full-width load: the context only allows 8-byte register reads) */
	__u64 cs = *(volatile __u64 *)&ctx->regs.cs;
	bool user_mode = (cs & 3) == 3;
	if (!user_mode)
		s->kstack_len = bpf_get_stack(ctx, s->kstack, sizeof(s->kstack), 0);

	if (no_user_context(task)) {
		s->flags |= SAMPLE_KERNEL_THREAD;
		goto submit;
	}

	__u64 ip, sp, bp;
	if (user_mode) {
		ip = ctx->regs.ip;
		sp = ctx->regs.sp;
		bp = ctx->regs.bp;
	} else {
		struct pt_regs *uregs = (struct pt_regs *)bpf_task_pt_regs(task);
		s->flags |= SAMPLE_IN_KERNEL;
		ip = BPF_CORE_READ(uregs, ip);
		sp = BPF_CORE_READ(uregs, sp);
		bp = BPF_CORE_READ(uregs, bp);
	}
	s->ip = ip;
	s->sp = sp;
	s->bp = bp;
	s->flags |= SAMPLE_USER_REGS;

	/* A frame-pointer walk is only worth starting when bp points into the
	 * stack just above sp (see MAX_FRAME_BYTES): the kernel's walk would
	 * fault on the garbage that code without frame pointers leaves in bp
	 * (a page fault per sample costs more than the rest of the sample). */
	if (fp_user_stack && bp >= sp && bp - sp < MAX_FRAME_BYTES)
		s->ustack_len = bpf_get_stack(ctx, s->ustack, sizeof(s->ustack), BPF_F_USER_STACK);
	else if (fp_user_stack) {
		s->ustack[0] = ip; /* what the kernel's walk would have found */
		s->ustack_len = sizeof(__u64);
	}

	if (stack_copy_size && sp) {
		/* The main thread's stack ends at the process's initial stack
		 * pointer (argc): copying past it would only copy the
		 * environment, and fault at the mapping's end. */
		__u32 size = stack_copy_size;
		bool at_end = false;
		__u64 top = BPF_CORE_READ(task, mm, start_stack);
		if (tid == tgid && top > sp && top - sp < size) {
			size = top - sp + sizeof(__u64);
			at_end = true;
		}
		bool ended;
		s->stack_copy_len = copy_user_stack((__u8 *)(s + 1), sp, size, &ended);
		if (!s->stack_copy_len)
			count(STAT_COPY_FAILED);
		else if (ended || at_end)
			s->flags |= SAMPLE_STACK_END;
	}

submit:;
	/* Batched wake-ups: waking the reader (an interrupt and a context
	 * switch) costs more than the sample itself. The reader polls the
	 * buffer every 100 ms anyway; it is only woken when the buffer fills
	 * faster than that. */
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(s, queued >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	return 0;
}
