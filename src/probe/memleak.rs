//! Memory-leak probes: uprobes on user allocators (`memleak`) or the kmem
//! tracepoints (`kmemleak`). The bookkeeping of outstanding allocations is
//! done in the kernel; stacks arrive once each through a ring buffer, and
//! what is still allocated is read from the `allocs` map at the end.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, UprobeMultiOpts};

use super::memleak_skel::{types, MemleakSkel, MemleakSkelBuilder};
use super::ring::{Delivery, Ring};
use super::setup::{
    self, ensure_tracefs, load_reporting, percpu_counter, request_verifier_stats, ProbeError,
};
pub use super::stacks::{StackRecord, UnwindMaps};
use super::targets::{
    self, autoload_target_tracking, set_filter_rodata, target_maps_of, TargetMaps,
};
use crate::allocator::{AllocFn, EntryPoint};
use crate::process::FileKey;
use crate::target::{Filter, ThreadFilter};
use crate::unwind::table::UNWIND_ROWS;

/// Entries in the exponential table for sampling (`SAMPLE_TABLE_SIZE`).
const SAMPLE_TABLE_SIZE: u32 = 4096;

/// Distinct kernel stacks kmemleak marks as delivered (a preallocated map:
/// when it is full, further new stacks are delivered at every event).
const KERNEL_STACK_IDS: u32 = 1 << 16;

/// Functions of the kernel's BPF allocator and the map code that calls it:
/// an allocation with one of them on its stack is BPF's own memory.
const BPF_ALLOCATOR_FUNCTIONS: &[&str] = &[
    "bpf_mem_refill",
    "alloc_bulk",
    "prefill_mem_cache",
    "bpf_mem_alloc",
    "bpf_mem_cache_alloc",
    "bpf_mem_cache_alloc_flags",
    "bpf_map_kmalloc_node",
    "bpf_map_kmalloc_nolock",
    "bpf_map_kzalloc",
    "bpf_map_kvcalloc",
    "bpf_map_alloc_percpu",
    "bpf_selem_alloc",
    "bpf_local_storage_alloc",
    "alloc_htab_elem",
];

/// Entries into interrupt context (x86_64): an allocation with one of them
/// on its stack was made by an interrupt or a softirq, not by the task it
/// interrupted. (Exceptions such as page faults are the task's own.)
fn is_interrupt_entry(name: &str) -> bool {
    name.starts_with("asm_sysvec_")
        || matches!(
            name,
            "asm_common_interrupt"
                | "asm_spurious_interrupt"
                | "asm_exc_nmi"
                | "handle_softirqs"
                | "__do_softirq"
        )
}

/// What a kernel function on an allocation's stack says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRange {
    BpfAllocator,
    Interrupt,
}

/// The ranges of [`BPF_ALLOCATOR_FUNCTIONS`] and the interrupt entries in
/// the running kernel (empty when kallsyms hides addresses).
fn kernel_ranges() -> Vec<(u64, u64, KernelRange)> {
    match std::fs::read_to_string("/proc/kallsyms") {
        Ok(text) => function_ranges(&text, |name| {
            if BPF_ALLOCATOR_FUNCTIONS.contains(&name) {
                Some(KernelRange::BpfAllocator)
            } else if is_interrupt_entry(name) {
                Some(KernelRange::Interrupt)
            } else {
                None
            }
        }),
        Err(e) => {
            log::debug!("reading /proc/kallsyms: {e}");
            Vec::new()
        }
    }
}

/// At most `max` of `ranges`, the BPF allocator's first (leaving out BPF's
/// own memory is what keeps kmemleak from stalling a CPU), still sorted.
fn fit_ranges(
    mut ranges: Vec<(u64, u64, KernelRange)>,
    max: usize,
) -> Vec<(u64, u64, KernelRange)> {
    if ranges.len() > max {
        log::debug!("{} kernel function ranges, {max} kept", ranges.len());
        ranges.sort_by_key(|r| (r.2 != KernelRange::BpfAllocator, r.0));
        ranges.truncate(max);
        ranges.sort_by_key(|r| r.0);
    }
    ranges
}

/// The address ranges of the core-kernel functions that `classify` names,
/// from kallsyms text: from each one's address to the next text symbol's,
/// sorted, merged where neighbours of one kind touch.
pub fn function_ranges<K: Copy + PartialEq>(
    kallsyms: &str,
    classify: impl Fn(&str) -> Option<K>,
) -> Vec<(u64, u64, K)> {
    let mut text: Vec<u64> = Vec::new();
    let mut wanted: Vec<(u64, K)> = Vec::new();
    for line in kallsyms.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        // Core kernel text only (module symbols carry a [module] field).
        if !matches!(kind, "t" | "T") || f.next().is_some() {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if addr == 0 {
            continue;
        }
        text.push(addr);
        if let Some(k) = classify(name) {
            wanted.push((addr, k));
        }
    }
    text.sort_unstable();
    text.dedup();
    wanted.sort_by_key(|w| w.0);
    wanted.dedup_by_key(|w| w.0);
    let mut out: Vec<(u64, u64, K)> = Vec::new();
    for (lo, kind) in wanted {
        let i = text.partition_point(|&a| a <= lo);
        let Some(&hi) = text.get(i) else { continue };
        match out.last_mut() {
            Some(last) if last.1 == lo && last.2 == kind => last.1 = hi,
            _ => out.push((lo, hi, kind)),
        }
    }
    out
}

/// Which allocations are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocators {
    /// User-space allocators, through uprobes attached per process.
    User,
    /// Kernel allocators (slab and page), through the kmem tracepoints.
    Kernel,
}

/// Settings of one recording.
#[derive(Clone, Debug)]
pub struct MemleakConfig {
    pub allocators: Allocators,
    pub filter: Filter,
    pub threads: ThreadFilter,
    /// Mean bytes between samples (0 = track every allocation).
    pub sample_bytes: u64,
    /// Most outstanding allocations kept at once.
    pub max_outstanding: u32,
}

/// What the memleak program reports through its ring buffer.
pub enum MemleakEvent {
    /// A stack seen for the first time.
    Stack(Box<StackRecord>),
    /// A launched command reached its entry point and stopped itself
    /// (`attach_entry`); it waits for SIGCONT.
    Stopped(u32),
    /// A process of a launched command exec'd a new program and stopped
    /// before running it; it waits for SIGCONT.
    Exec(u32),
}

impl MemleakEvent {
    pub fn parse(data: &[u8]) -> Option<Self> {
        let kind = u32::from_ne_bytes(data.get(..4)?.try_into().ok()?);
        let pid = || Some(u32::from_ne_bytes(data.get(4..8)?.try_into().ok()?));
        if kind == types::record_kind::RECORD_EXEC.0 {
            return Some(MemleakEvent::Stopped(pid()?));
        }
        if kind == types::record_kind::RECORD_NEW_IMAGE.0 {
            return Some(MemleakEvent::Exec(pid()?));
        }
        StackRecord::parse(data).map(|r| MemleakEvent::Stack(Box::new(r)))
    }
}

/// One allocation still outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// Owning process (0 for kernel memory).
    pub tgid: u32,
    pub addr: u64,
    pub size: u64,
    /// CLOCK_MONOTONIC nanoseconds at allocation.
    pub ts: u64,
    pub stack_id: u64,
}

/// Counters kept by the BPF program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemleakStats {
    pub allocs: u64,
    pub frees: u64,
    /// Allocations not recorded: the outstanding map was full.
    pub map_full: u64,
    /// New stacks not delivered: the ring buffer was full.
    pub stack_lost: u64,
    /// Calls not traced: no per-thread state could be created.
    pub no_state: u64,
    /// Processes started by targets that could not be followed.
    pub targets_full: u64,
    /// kmemleak: allocations of the kernel's BPF allocator, left out.
    pub bpf_self: u64,
    /// kmemleak: allocations in interrupt context, left out (filtered).
    pub irq_skipped: u64,
}

impl MemleakStats {
    /// Events that could not be recorded.
    pub fn lost(&self) -> u64 {
        self.map_full + self.stack_lost + self.no_state
    }
}

/// Loaded memleak programs; uprobes are added per process and binary.
pub struct MemleakProbe<'obj> {
    skel: MemleakSkel<'obj>,
    ring: Ring<'obj>,
    links: Vec<Link>,
    /// (pid or -1, binary) pairs already probed.
    attached: HashSet<(i32, FileKey)>,
}

impl<'obj> Delivery<'obj> for MemleakProbe<'obj> {
    fn ring(&self) -> &Ring<'obj> {
        &self.ring
    }

    fn links(&mut self) -> &mut Vec<Link> {
        &mut self.links
    }
}

impl<'obj> MemleakProbe<'obj> {
    /// Loads the programs; in kernel mode also attaches the tracepoints.
    /// `on_event` receives every new stack and stopped command.
    pub fn attach(
        storage: &'obj mut MaybeUninit<OpenObject>,
        config: &MemleakConfig,
        mut on_event: impl FnMut(MemleakEvent) + 'obj,
    ) -> Result<Self, ProbeError> {
        let mut open = MemleakSkelBuilder::default()
            .open(storage)
            .map_err(ProbeError::load)?;
        {
            let rodata = setup::rodata(open.maps.rodata_data.as_deref_mut())?;
            set_filter_rodata!(rodata, &config.filter, &config.threads);
            rodata.sample_bytes = config.sample_bytes;
            rodata.kernel_user_stacks = !matches!(config.filter, Filter::All);
            rodata.kernel_skip_irq = !matches!(config.filter, Filter::All);
            if config.allocators == Allocators::Kernel {
                let ranges = fit_ranges(kernel_ranges(), rodata.kernel_range_kinds.len());
                if !ranges.iter().any(|r| r.2 == KernelRange::BpfAllocator) {
                    log::warn!(
                        "the kernel's BPF allocator was not found in /proc/kallsyms: kmemleak \
                         may count the memory of BPF maps (its own too)"
                    );
                }
                let n = ranges.len().min(rodata.kernel_range_kinds.len());
                for (i, (lo, hi, kind)) in ranges[..n].iter().enumerate() {
                    rodata.kernel_ranges[2 * i] = *lo;
                    rodata.kernel_ranges[2 * i + 1] = *hi;
                    rodata.kernel_range_kinds[i] = match kind {
                        KernelRange::BpfAllocator => types::kernel_range_kind::RANGE_BPF_ALLOCATOR,
                        KernelRange::Interrupt => types::kernel_range_kind::RANGE_INTERRUPT,
                    }
                    .0 as u8;
                }
                rodata.kernel_range_count = n as u32;
            }
        }
        // Preallocated: an allocation event never allocates (the BPF
        // allocator refills its caches from irq_work on the target's CPU,
        // which the kmem tracepoints would see).
        open.maps
            .allocs
            .set_map_flags(0)
            .and_then(|()| {
                open.maps
                    .allocs
                    .set_max_entries(config.max_outstanding.max(1024))
            })
            .map_err(ProbeError::load)?;
        let user = config.allocators == Allocators::User;
        if !user {
            // kmemleak's event path allocates nothing either: its stack ids
            // are preallocated too (fewer: kernel stacks repeat).
            open.maps
                .seen_stacks
                .set_map_flags(0)
                .and_then(|()| open.maps.seen_stacks.set_max_entries(KERNEL_STACK_IDS))
                .map_err(ProbeError::load)?;
        }
        open.maps
            .unwind_rows
            .set_max_entries(if user { UNWIND_ROWS } else { 1 })
            .map_err(ProbeError::load)?;
        {
            let p = &mut open.progs;
            for prog in [&mut p.on_alloc, &mut p.on_free, &mut p.on_entry] {
                prog.set_autoload(user);
            }
            p.on_exec
                .set_autoload(user && config.filter.follows_children());
            for prog in [
                &mut p.on_kmalloc,
                &mut p.on_kmem_cache_alloc,
                &mut p.on_page_alloc,
                &mut p.on_kfree,
                &mut p.on_kmem_cache_free,
                &mut p.on_page_free,
                &mut p.on_page_free_batched,
            ] {
                prog.set_autoload(!user);
            }
            autoload_target_tracking!(p, &config.filter);
        }
        request_verifier_stats(open.open_object_mut());
        let what = if user { "memleak" } else { "kmemleak" };
        let skel = load_reporting(what, || open.load()).map_err(|e| {
            if user {
                ProbeError::Load(format!(
                    "{e:#}; --probe memleak needs uprobe sessions (Linux 6.13 or later)"
                ))
            } else {
                ProbeError::load(e)
            }
        })?;

        if config.sample_bytes > 0 {
            fill_sample_table(&skel, config.sample_bytes)
                .map_err(|e| ProbeError::attach("sample table", &e))?;
        }
        let p = &skel.progs;
        let mut links = targets::start(
            &target_maps_of!(skel.maps),
            &p.on_fork,
            &p.on_exit,
            &config.filter,
            &config.threads,
        )?;
        if user && config.filter.follows_children() {
            links.push(
                p.on_exec
                    .attach()
                    .map_err(|e| ProbeError::attach("sched_process_exec tracepoint", &e))?,
            );
        }
        if !user {
            ensure_tracefs();
            let p = &skel.progs;
            for (name, prog) in [
                ("kmem/kmalloc", &p.on_kmalloc),
                ("kmem/kmem_cache_alloc", &p.on_kmem_cache_alloc),
                ("kmem/mm_page_alloc", &p.on_page_alloc),
                ("kmem/kfree", &p.on_kfree),
                ("kmem/kmem_cache_free", &p.on_kmem_cache_free),
                ("kmem/mm_page_free", &p.on_page_free),
                ("kmem/mm_page_free_batched", &p.on_page_free_batched),
            ] {
                links.push(
                    prog.attach()
                        .map_err(|e| ProbeError::attach(&format!("{name} tracepoint"), &e))?,
                );
            }
        }

        let ring = Ring::new(&skel.maps.stacks, move |data: &[u8]| {
            if let Some(ev) = MemleakEvent::parse(data) {
                on_event(ev);
            }
        })?;
        Ok(MemleakProbe {
            skel,
            ring,
            links,
            attached: HashSet::new(),
        })
    }

    /// Stops processes that reach `offset` of the executable at `path`
    /// (a launched command's entry point), reporting them as
    /// `MemleakEvent::Stopped`.
    pub fn attach_entry(&mut self, path: &Path, offset: u64) -> Result<(), ProbeError> {
        let link = self
            .skel
            .progs
            .on_entry
            .attach_uprobe(false, -1, path, offset as usize)
            .map_err(|e| {
                ProbeError::Attach(format!("uprobe on the entry of {}: {e:#}", path.display()))
            })?;
        self.links.push(link);
        Ok(())
    }

    /// The in-kernel unwinder's tables of this program.
    pub fn unwind_maps(&self) -> UnwindMaps<'_> {
        UnwindMaps::new(&self.skel.maps.unwind_rows, &self.skel.maps.unwind_procs)
    }

    /// Probes the allocator entry points of one binary, reached through
    /// `path`, for process `pid` (-1: every process, filtered in BPF).
    /// Returns false when this pair was probed already.
    pub fn attach_allocator(
        &mut self,
        pid: i32,
        key: FileKey,
        path: &Path,
        entry_points: &[EntryPoint],
    ) -> Result<bool, ProbeError> {
        if !self.attached.insert((pid, key)) {
            return Ok(false);
        }
        // One link for the allocation functions (the cookie tells the
        // program which one was called) and one for the frees.
        let (frees, allocs): (Vec<&EntryPoint>, Vec<&EntryPoint>) =
            entry_points.iter().partition(|ep| ep.kind == AllocFn::Free);
        let p = &self.skel.progs;
        for (prog, eps, session) in [(&p.on_alloc, allocs, true), (&p.on_free, frees, false)] {
            if eps.is_empty() {
                continue;
            }
            let opts = UprobeMultiOpts {
                offsets: eps.iter().map(|ep| ep.offset as usize).collect(),
                cookies: eps.iter().map(|ep| alloc_kind(ep.kind)).collect(),
                session,
                ..Default::default()
            };
            let names: Vec<&str> = eps.iter().map(|ep| ep.name).collect();
            let link = prog
                .attach_uprobe_multi_with_opts(pid, path, "", opts)
                .map_err(|e| {
                    ProbeError::Attach(format!(
                        "uprobes on {} in {} (pid {pid}): {e:#}",
                        names.join(", "),
                        path.display()
                    ))
                })?;
            self.links.push(link);
        }
        Ok(true)
    }

    /// The target maps of this program.
    pub fn target_maps(&self) -> TargetMaps<'_> {
        target_maps_of!(self.skel.maps)
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> MemleakStats {
        use types::stat_idx as s;
        let read = |idx: s| percpu_counter(&self.skel.maps.stats, idx.0);
        MemleakStats {
            allocs: read(s::STAT_ALLOCS),
            frees: read(s::STAT_FREES),
            map_full: read(s::STAT_MAP_FULL),
            stack_lost: read(s::STAT_STACK_LOST),
            no_state: read(s::STAT_NO_STATE),
            targets_full: read(s::STAT_TARGETS_FULL),
            bpf_self: read(s::STAT_BPF_SELF),
            irq_skipped: read(s::STAT_IRQ_SKIPPED),
        }
    }

    /// Forgets every outstanding allocation of `tgid`: its address space
    /// was replaced by exec, so none of it can be freed or leak any more.
    /// Returns how many were forgotten.
    pub fn forget_process(&self, tgid: u32) -> Result<usize, ProbeError> {
        let map = &self.skel.maps.allocs;
        let key_size = std::mem::size_of::<types::alloc_key>();
        let fail = |e: libbpf_rs::Error| {
            ProbeError::Attach(format!("forgetting pid {tgid}'s allocations: {e:#}"))
        };
        const _: () = assert!(std::mem::offset_of!(types::alloc_key, tgid) == 0);
        let keys: Vec<u8> = map
            .lookup_batch(4096, MapFlags::ANY, MapFlags::ANY)
            .map_err(fail)?
            .filter(|(k, _)| k.len() == key_size && k[..4] == tgid.to_ne_bytes())
            .flat_map(|(k, _)| k)
            .collect();
        let n = keys.len() / key_size;
        if n > 0 {
            map.delete_batch(&keys, n as u32, MapFlags::ANY, MapFlags::ANY)
                .map_err(fail)?;
        }
        Ok(n)
    }

    /// Continuous mode: forgets that these stacks were delivered (their
    /// processes are gone).
    pub fn forget_stacks(&self, ids: &[u64]) {
        super::stacks::forget_seen(&self.skel.maps.seen_stacks, ids);
    }

    /// Every allocation still outstanding.
    pub fn outstanding(&self) -> Result<Vec<Outstanding>, ProbeError> {
        let map = &self.skel.maps.allocs;
        let key_size = std::mem::size_of::<types::alloc_key>();
        let value_size = std::mem::size_of::<types::alloc_info>();
        let iter = map
            .lookup_batch(4096, MapFlags::ANY, MapFlags::ANY)
            .map_err(|e| ProbeError::Attach(format!("reading outstanding allocations: {e:#}")))?;
        let mut out = Vec::new();
        for (k, v) in iter {
            if k.len() < key_size || v.len() < value_size {
                continue;
            }
            // SAFETY: both buffers hold at least one plain-old-data value
            // of the generated types.
            let (key, info): (types::alloc_key, types::alloc_info) = unsafe {
                (
                    std::ptr::read_unaligned(k.as_ptr().cast()),
                    std::ptr::read_unaligned(v.as_ptr().cast()),
                )
            };
            out.push(Outstanding {
                tgid: key.tgid,
                addr: key.addr,
                size: info.size,
                ts: info.ts,
                stack_id: info.stack_id,
            });
        }
        Ok(out)
    }
}

/// The `enum alloc_kind` value (the attach cookie) of an entry point.
fn alloc_kind(f: AllocFn) -> u64 {
    use types::alloc_kind as k;
    let kind = match f {
        AllocFn::Malloc => k::ALLOC_MALLOC,
        AllocFn::Calloc => k::ALLOC_CALLOC,
        AllocFn::Realloc => k::ALLOC_REALLOC,
        AllocFn::ReallocArray => k::ALLOC_REALLOCARRAY,
        AllocFn::PosixMemalign => k::ALLOC_POSIX_MEMALIGN,
        AllocFn::Memalign => k::ALLOC_MEMALIGN,
        AllocFn::Free => k::ALLOC_NONE,
    };
    u64::from(kind.0)
}

/// Exponential variates with mean `mean` at evenly spaced quantiles: a
/// random entry is the distance in bytes to the next sampled byte.
pub fn sample_table(mean: u64) -> Vec<u64> {
    (0..SAMPLE_TABLE_SIZE)
        .map(|i| {
            let q = (f64::from(i) + 0.5) / f64::from(SAMPLE_TABLE_SIZE);
            (-(q.ln()) * mean as f64).round().max(1.0) as u64
        })
        .collect()
}

fn fill_sample_table(skel: &MemleakSkel<'_>, mean: u64) -> libbpf_rs::Result<()> {
    for (i, v) in sample_table(mean).into_iter().enumerate() {
        skel.maps.sample_table.update(
            &(i as u32).to_ne_bytes(),
            &v.to_ne_bytes(),
            MapFlags::ANY,
        )?;
    }
    Ok(())
}

/// Unbiased estimate of (bytes, allocations) for one sampled allocation of
/// `size` bytes when each byte is sampled with probability 1/`mean`: the
/// allocation was sampled with probability 1 - exp(-size/mean).
pub fn unsample(size: u64, mean: u64) -> (f64, f64) {
    if mean == 0 {
        return (size as f64, 1.0);
    }
    let p = -(-(size as f64) / mean as f64).exp_m1();
    if p <= 0.0 {
        return (0.0, 0.0);
    }
    (size as f64 / p, 1.0 / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ranges_span_to_the_next_text_symbol() {
        let kallsyms = "\
ffffffff81559b40 t alloc_bulk
ffffffff81559d00 t free_one
ffffffff81559e20 t bpf_mem_refill
ffffffff81559f00 t bpf_mem_refill_once
ffffffff81559f00 d some_data
ffffffffc0001000 t alloc_bulk [some_module]
0000000000000000 t bpf_map_kzalloc
ffffffff8155aa70 T bpf_mem_alloc
ffffffff8155ab10 T bpf_mem_free
";
        let names = [
            "alloc_bulk",
            "bpf_mem_refill",
            "bpf_mem_alloc",
            "bpf_map_kzalloc",
        ];
        let r = function_ranges(kallsyms, |n| names.contains(&n).then_some(()));
        assert_eq!(
            r,
            [
                (0xffffffff81559b40, 0xffffffff81559d00, ()),
                (0xffffffff81559e20, 0xffffffff81559f00, ()),
                (0xffffffff8155aa70, 0xffffffff8155ab10, ()),
            ]
        );
        let many: Vec<(u64, u64, KernelRange)> = (0..40)
            .map(|i| {
                (
                    i * 16,
                    i * 16 + 8,
                    if i % 10 == 9 {
                        KernelRange::BpfAllocator
                    } else {
                        KernelRange::Interrupt
                    },
                )
            })
            .collect();
        let fit = fit_ranges(many, 32);
        assert_eq!(fit.len(), 32);
        assert_eq!(
            fit.iter()
                .filter(|r| r.2 == KernelRange::BpfAllocator)
                .count(),
            4
        );
        assert!(fit.windows(2).all(|w| w[0].0 < w[1].0));
        // Neighbours of one kind merge.
        let sysvec = "\
ffffffff81000d40 T asm_common_interrupt
ffffffff81000d80 T asm_spurious_interrupt
ffffffff81000db0 T asm_sysvec_error_interrupt
ffffffff81000dd0 T asm_exc_page_fault
ffffffff81000e00 T asm_sysvec_reboot
ffffffff81000e20 T other
";
        let r = function_ranges(sysvec, |n| is_interrupt_entry(n).then_some(()));
        assert_eq!(
            r,
            [
                (0xffffffff81000d40, 0xffffffff81000dd0, ()),
                (0xffffffff81000e00, 0xffffffff81000e20, ())
            ]
        );
        // The running kernel has the allocator's refill path, and fewer
        // ranges than the BPF program takes.
        if let Ok(text) = std::fs::read_to_string("/proc/kallsyms") {
            if text
                .lines()
                .next()
                .is_some_and(|l| !l.starts_with("0000000000000000"))
            {
                let r = kernel_ranges();
                assert!(r.iter().any(|r| r.2 == KernelRange::BpfAllocator), "{r:x?}");
                assert!(r.iter().any(|r| r.2 == KernelRange::Interrupt), "{r:x?}");
                assert!(
                    r.len() <= types::limits::MAX_KERNEL_RANGES.0 as usize,
                    "{r:x?}"
                );
            }
        }
    }

    #[test]
    fn sample_table_has_the_requested_mean() {
        let t = sample_table(512 * 1024);
        let mean = t.iter().sum::<u64>() as f64 / t.len() as f64;
        assert!((mean / (512.0 * 1024.0) - 1.0).abs() < 0.01, "{mean}");
        assert!(t.iter().all(|&v| v >= 1));
    }

    #[test]
    fn unsampling_is_unbiased_and_exact_when_not_sampling() {
        assert_eq!(unsample(100, 0), (100.0, 1.0));
        // A huge allocation is always sampled: weight is its size.
        let (b, c) = unsample(100 << 20, 1024);
        assert!((b - (100 << 20) as f64).abs() < 1.0 && (c - 1.0).abs() < 1e-9);
        // A small one stands for about mean/size allocations.
        let (b, c) = unsample(16, 1 << 20);
        assert!(
            (b - (1 << 20) as f64).abs() / ((1 << 20) as f64) < 0.001,
            "{b}"
        );
        assert!((c - 65536.0).abs() < 100.0, "{c}");
    }
}
