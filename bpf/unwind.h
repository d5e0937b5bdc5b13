/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * In-kernel CFI unwinding of user stacks (included after common.h).
 *
 * User space compiles each binary's .eh_frame into rows sorted by address
 * (struct unwind_row) in the shared `unwind_rows` array and tells, per
 * process, which binaries are mapped where (`unwind_procs`). A frame step
 * finds the pc's module and row and applies the rule; code without rows
 * (JIT code, binaries without tables) falls back to frame pointers.
 *
 * Verification cost matters (it is paid at every attach): the two searches
 * are global functions, which the verifier checks once, on their own, and
 * the frame loop is an open-coded iterator whose body is short and
 * branch-poor, so its states converge in a few iterations.
 */
#ifndef FLAMEPROBE_UNWIND_H
#define FLAMEPROBE_UNWIND_H

/* Dummy instances so the skeleton's BTF carries the shared types for Rust. */
struct unwind_row _unwind_row = {};
struct unwind_proc _unwind_proc = {};
enum unwind_kind _unwind_kind = 0;

/* CFI rows of every binary with unwind tables, filled by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized from user space */
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

/* Per target process: its binaries and their rows. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);   /* tgid */
	__type(value, struct unwind_proc);
} unwind_procs SEC(".maps");

/* Index of the module of `p` whose range holds `pc`, or -1. Modules are
 * sorted by start: a binary search for the last one starting at or below
 * pc. */
__noinline int unwind_find_module(struct unwind_proc *p, __u64 pc)
{
	if (!p)
		return -1;
	__u32 lo = 0, hi = p->count;
	int i;

	if (hi > UNWIND_MAX_MODULES)
		hi = UNWIND_MAX_MODULES;
	/* Invariant: modules below lo start at or below pc, from hi up above. */
	bpf_for(i, 0, UNWIND_MODULE_STEPS) {
		if (lo >= hi)
			break;
		__u32 mid = (lo + hi) / 2;
		if (mid >= UNWIND_MAX_MODULES)
			return -1;
		if (p->mods[mid].start <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || lo > UNWIND_MAX_MODULES)
		return -1;
	__u32 m = lo - 1;
	if (m >= UNWIND_MAX_MODULES || pc >= p->mods[m].end)
		return -1;
	return m;
}

/* Index in `unwind_rows` of the last row of [first, first + count) whose pc
 * is at or below `rel`, or -1 when there is none. */
__noinline int unwind_find_row(__u32 first, __u32 count, __u32 rel)
{
	__u32 lo = first, hi = first + count;
	int i;

	if (!count)
		return -1;
	bpf_for(i, 0, UNWIND_SEARCH_STEPS) {
		if (hi - lo <= 1)
			break;
		__u32 mid = lo + (hi - lo) / 2;
		struct unwind_row *r = bpf_map_lookup_elem(&unwind_rows, &mid);
		if (!r)
			return -1;
		if (r->pc <= rel)
			lo = mid;
		else
			hi = mid;
	}
	struct unwind_row *r = bpf_map_lookup_elem(&unwind_rows, &lo);
	if (!r || r->pc > rel)
		return -1;
	return lo;
}

/* The unwind row for `pc` in process `p`, or NULL where nothing is known. */
static __always_inline struct unwind_row *unwind_row_of(struct unwind_proc *p, __u64 pc)
{
	int m = unwind_find_module(p, pc);
	/* clang knows the function's range, the verifier does not: keep
	 * the check. */
	barrier_var(m);
	if (m < 0 || m >= UNWIND_MAX_MODULES)
		return NULL;
	struct unwind_module *mod = &p->mods[m];
	__u64 rel = pc - mod->bias;
	if (rel > 0xffffffffULL)
		return NULL;
	int r = unwind_find_row(mod->first, mod->count, rel);
	if (r < 0)
		return NULL;
	__u32 idx = r;
	return bpf_map_lookup_elem(&unwind_rows, &idx);
}

/*
 * Unwinds a user stack from registers (pc, sp, bp) with the CFI rows of
 * process `proc` (frame pointers where a binary has none), storing the
 * return addresses, caller of the function at pc first, in `out` from
 * index `first` (0 or 1) on. Returns the number stored.
 */
static __always_inline __u32 unwind_user(struct unwind_proc *proc, __u64 pc, __u64 sp, __u64 bp,
					 __u64 out[FP_MAX_STACK_DEPTH], const int first)
{
	__u32 n = 0;
	int i;

	bpf_for(i, 0, FP_MAX_STACK_DEPTH - first) {
		/* A return address points after its call: look up the call. */
		struct unwind_row *r = unwind_row_of(proc, i == 0 ? pc : pc - 1);
		__u64 cfa, ra = 0;
		__u8 kind = r ? r->kind : UNWIND_NONE;
		if (kind == UNWIND_STOP)
			break;
		if (kind == UNWIND_CFA_RSP || kind == UNWIND_CFA_RBP) {
			cfa = (kind == UNWIND_CFA_RSP ? sp : bp) + (__s64)r->cfa_off;
			if (r->rbp_off &&
			    bpf_probe_read_user(&bp, sizeof(bp), (void *)(cfa + (__s64)r->rbp_off)))
				break;
		} else {
			/* No CFI (JIT code, a binary without tables). */
			if (bp < sp || bp - sp > MAX_FRAME_BYTES)
				break;
			cfa = bp + 16;
			if (bpf_probe_read_user(&bp, sizeof(bp), (void *)(cfa - 16)))
				break;
		}
		if (cfa <= sp || bpf_probe_read_user(&ra, sizeof(ra), (void *)(cfa - 8)) ||
		    ra < MIN_CODE_ADDR)
			break;
		out[i + first] = ra;
		n = i + 1;
		pc = ra;
		sp = cfa;
	}
	return n;
}

#endif /* FLAMEPROBE_UNWIND_H */
