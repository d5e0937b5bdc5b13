//! Off-CPU time: a `sched_switch` program (bpf/offcpu.bpf.c) that adds up
//! in the kernel how long each target thread was off the CPU, per stack.
//! Stacks arrive once each through a ring buffer; the totals, and the
//! threads still off the CPU, are read at the end.

use std::mem::MaybeUninit;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};

use super::c_string;
use super::offcpu_skel::{types, OffcpuSkel, OffcpuSkelBuilder};
use super::ring::{Delivery, Ring};
use super::setup::{self, load_reporting, percpu_counter, request_verifier_stats, ProbeError};
use super::stacks::{StackRecord, UnwindMaps};
use super::targets::{
    self, autoload_target_tracking, set_filter_rodata, target_maps_of, TargetMaps,
};
use crate::target::{Filter, ThreadFilter};
use crate::unwind::table::UNWIND_ROWS;
use crate::unwind::UserRegs;

/// Which reasons to leave the CPU are recorded (`--state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateFilter {
    /// Any: sleeping, waiting for I/O, preempted, stopped.
    #[default]
    All,
    /// Interruptible sleep (S): waiting for an event, a timer, a lock.
    Sleep,
    /// Uninterruptible sleep (D): mostly disk and other I/O.
    Disk,
}

/// Settings of one recording.
#[derive(Clone, Debug)]
pub struct OffcpuConfig {
    pub filter: Filter,
    pub threads: ThreadFilter,
    /// Shorter times off the CPU are left out (counted apart).
    pub min_block: Duration,
    pub states: StateFilter,
    /// Threads that can be off the CPU at once.
    pub max_threads: u32,
    /// Distinct (thread, stack) totals kept.
    pub max_totals: u32,
}

/// Time one thread spent off the CPU with one stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffcpuTotal {
    pub pid: u32,
    pub tid: u32,
    pub stack_id: u64,
    pub ns: u64,
    /// Times it went off the CPU with this stack.
    pub count: u64,
}

/// A thread off the CPU when the recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillOff {
    pub pid: u32,
    pub tid: u32,
    /// 0 when --state leaves its reason out.
    pub stack_id: u64,
    /// CLOCK_MONOTONIC ns when it left the CPU.
    pub since: u64,
    /// When it was woken (runnable, waiting for a CPU), if it was.
    pub woken: Option<u64>,
    /// Its state when it left (0: preempted, still runnable).
    pub state: u32,
}

/// A target thread that was off the CPU when the recording started.
pub struct BlockedTask {
    b: types::blocked_task,
}

impl BlockedTask {
    pub fn pid(&self) -> u32 {
        self.b.pid
    }
    pub fn tid(&self) -> u32 {
        self.b.tid
    }
    pub fn process_name(&self) -> String {
        c_string(&self.b.proc_comm)
    }
    pub fn thread_name(&self) -> String {
        c_string(&self.b.comm)
    }
    /// Kernel return addresses, leaf first.
    pub fn kernel_stack(&self) -> &[u64] {
        let n = usize::try_from(self.b.kstack_len).unwrap_or(0) / 8;
        &self.b.kstack[..n.min(self.b.kstack.len())]
    }
    /// User registers where it entered the kernel (None: a kernel thread).
    pub fn user_regs(&self) -> Option<UserRegs> {
        (self.b.sp != 0).then_some(UserRegs {
            ip: self.b.ip,
            sp: self.b.sp,
            bp: self.b.bp,
        })
    }
}

/// Counters kept by the BPF program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffcpuStats {
    /// Times a target thread went off the CPU.
    pub switches: u64,
    /// Switch-outs not recorded: too many threads off the CPU at once.
    pub start_full: u64,
    /// Times off the CPU dropped: the table of totals was full.
    pub totals_full: u64,
    /// Nanoseconds left out by --state.
    pub state_ns: u64,
    /// Nanoseconds, and times, left out by --min-block.
    pub short_ns: u64,
    pub short: u64,
    /// New stacks not delivered: the ring buffer was full.
    pub stack_lost: u64,
    /// Processes started by targets that could not be followed.
    pub targets_full: u64,
}

impl OffcpuStats {
    /// Events that could not be recorded.
    pub fn lost(&self) -> u64 {
        self.start_full + self.totals_full + self.stack_lost
    }
}

/// The attached sched_switch program; detaches when dropped.
pub struct OffcpuProbe<'obj> {
    skel: OffcpuSkel<'obj>,
    ring: Ring<'obj>,
    links: Vec<Link>,
}

impl<'obj> Delivery<'obj> for OffcpuProbe<'obj> {
    fn ring(&self) -> &Ring<'obj> {
        &self.ring
    }

    fn links(&mut self) -> &mut Vec<Link> {
        &mut self.links
    }
}

impl<'obj> OffcpuProbe<'obj> {
    /// Loads and attaches the program. `on_stack` receives every new stack.
    pub fn attach(
        storage: &'obj mut MaybeUninit<OpenObject>,
        config: &OffcpuConfig,
        mut on_stack: impl FnMut(StackRecord) + 'obj,
    ) -> Result<Self, ProbeError> {
        let mut open = OffcpuSkelBuilder::default()
            .open(storage)
            .map_err(ProbeError::load)?;
        {
            let rodata = setup::rodata(open.maps.rodata_data.as_deref_mut())?;
            set_filter_rodata!(rodata, &config.filter, &config.threads);
            rodata.min_block_ns = config.min_block.as_nanos().min(u128::from(u64::MAX)) as u64;
            rodata.state_filter = match config.states {
                StateFilter::All => types::offcpu_states::OFFCPU_STATE_ALL.0,
                StateFilter::Sleep => types::offcpu_states::OFFCPU_STATE_SLEEP.0,
                StateFilter::Disk => types::offcpu_states::OFFCPU_STATE_DISK.0,
            };
        }
        let m = &mut open.maps;
        m.offcpu_start
            .set_max_entries(config.max_threads.max(1024))
            .map_err(ProbeError::load)?;
        m.offcpu_totals
            .set_max_entries(config.max_totals.max(1024))
            .map_err(ProbeError::load)?;
        m.unwind_rows
            .set_max_entries(UNWIND_ROWS)
            .map_err(ProbeError::load)?;
        autoload_target_tracking!(open.progs, &config.filter);
        open.progs
            .on_wakeup
            .set_autoload(config.states != StateFilter::All);
        request_verifier_stats(open.open_object_mut());
        let skel = load_reporting("offcpu", || open.load()).map_err(ProbeError::load)?;

        let p = &skel.progs;
        let mut links = targets::start(
            &target_maps_of!(skel.maps),
            &p.on_fork,
            &p.on_exit,
            &config.filter,
            &config.threads,
        )?;
        links.push(
            p.on_switch
                .attach()
                .map_err(|e| ProbeError::attach("sched_switch tracepoint", &e))?,
        );
        if config.states != StateFilter::All {
            links.push(
                p.on_wakeup
                    .attach()
                    .map_err(|e| ProbeError::attach("sched_wakeup tracepoint", &e))?,
            );
        }
        let ring = Ring::new(&skel.maps.stacks, move |data: &[u8]| {
            if let Some(rec) = StackRecord::parse(data) {
                on_stack(rec);
            }
        })?;
        Ok(OffcpuProbe { skel, ring, links })
    }

    /// The target threads off the CPU right now (a task iterator), for
    /// [`seed`](Self::seed)ing their time from now on.
    pub fn blocked_now(&self) -> Result<Vec<BlockedTask>, ProbeError> {
        use std::io::Read;
        let link = self
            .skel
            .progs
            .blocked_now
            .attach_iter_with_opts(libbpf_rs::IterOpts::None)
            .map_err(|e| ProbeError::attach("task iterator", &e))?;
        let mut bytes = Vec::new();
        libbpf_rs::Iter::new(&link)
            .and_then(|mut it| it.read_to_end(&mut bytes).map_err(libbpf_rs::Error::from))
            .map_err(|e| ProbeError::attach("task iterator", &e))?;
        let size = std::mem::size_of::<types::blocked_task>();
        Ok(bytes
            .chunks_exact(size)
            .map(|c| BlockedTask {
                // SAFETY: each chunk is one blocked_task record, a
                // plain-old-data type generated from the program's BTF.
                b: unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) },
            })
            .collect())
    }

    /// Records that `task` is off the CPU since `since` (CLOCK_MONOTONIC
    /// ns) with stack `stack_id`, unless the program has seen it leave
    /// since (then its own record stands).
    pub fn seed(&self, task: &BlockedTask, stack_id: u64, since: u64) -> Result<(), ProbeError> {
        let st = types::offcpu_start {
            ts: since,
            woken: 0,
            stack_id,
            pid: task.pid(),
            state: task.b.state,
        };
        let tid = task.tid();
        // SAFETY: offcpu_start is plain data with explicit padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&st as *const types::offcpu_start).cast::<u8>(),
                std::mem::size_of::<types::offcpu_start>(),
            )
        };
        match self
            .skel
            .maps
            .offcpu_start
            .update(&tid.to_ne_bytes(), bytes, MapFlags::NO_EXIST)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ProbeError::attach("off-CPU thread table", &e)),
        }
    }

    /// The in-kernel unwinder's tables of this program.
    pub fn unwind_maps(&self) -> UnwindMaps<'_> {
        UnwindMaps::new(&self.skel.maps.unwind_rows, &self.skel.maps.unwind_procs)
    }

    /// Time off the CPU per thread and stack.
    pub fn totals(&self) -> Vec<OffcpuTotal> {
        read_map::<types::offcpu_key, types::offcpu_value>(&self.skel.maps.offcpu_totals)
            .into_iter()
            .map(|(k, v)| OffcpuTotal {
                pid: k.pid,
                tid: k.tid,
                stack_id: k.stack_id,
                ns: v.ns,
                count: v.count,
            })
            .collect()
    }

    /// Continuous mode: drops the totals of threads that are gone (read
    /// for the last time), and that their stacks were delivered, so the
    /// tables stay bounded however long the recording runs.
    pub fn forget(&self, totals: &[OffcpuTotal], stack_ids: &[u64]) {
        for t in totals {
            let key = types::offcpu_key {
                pid: t.pid,
                tid: t.tid,
                stack_id: t.stack_id,
            };
            // SAFETY: offcpu_key is plain data without padding (u32, u32, u64).
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&key as *const types::offcpu_key).cast::<u8>(),
                    std::mem::size_of::<types::offcpu_key>(),
                )
            };
            let _ = self.skel.maps.offcpu_totals.delete(bytes);
        }
        super::stacks::forget_seen(&self.skel.maps.seen_stacks, stack_ids);
    }

    /// The threads off the CPU right now.
    pub fn still_off(&self) -> Vec<StillOff> {
        read_map::<u32, types::offcpu_start>(&self.skel.maps.offcpu_start)
            .into_iter()
            .map(|(tid, st)| StillOff {
                pid: st.pid,
                tid,
                stack_id: st.stack_id,
                since: st.ts,
                woken: (st.woken != 0).then_some(st.woken),
                state: st.state,
            })
            .collect()
    }

    /// The target maps of this program.
    pub fn target_maps(&self) -> TargetMaps<'_> {
        target_maps_of!(self.skel.maps)
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> OffcpuStats {
        use types::stat_idx as s;
        let read = |idx: s| percpu_counter(&self.skel.maps.stats, idx.0);
        OffcpuStats {
            switches: read(s::STAT_SWITCHES),
            start_full: read(s::STAT_START_FULL),
            totals_full: read(s::STAT_TOTALS_FULL),
            state_ns: read(s::STAT_STATE_NS),
            short_ns: read(s::STAT_SHORT_NS),
            short: read(s::STAT_SHORT),
            stack_lost: read(s::STAT_STACK_LOST),
            targets_full: read(s::STAT_TARGETS_FULL),
        }
    }
}

/// Every entry of a hash map of plain-data keys and values. Read in
/// batches, which stays correct while the program adds and deletes
/// entries (continuous mode reads while attached; a key-by-key walk
/// starts over when its key is deleted meanwhile).
fn read_map<K: Copy, V: Copy>(map: &dyn MapCore) -> Vec<(K, V)> {
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut out = Vec::new();
    let entries = match map.lookup_batch(1024, MapFlags::ANY, MapFlags::ANY) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("reading the off-CPU tables failed: {e}");
            return out;
        }
    };
    for (key, value) in entries {
        if key.len() < ks || value.len() < vs {
            continue;
        }
        // SAFETY: both buffers hold at least one value of the plain-data
        // types generated from the program's BTF.
        out.push(unsafe {
            (
                std::ptr::read_unaligned(key.as_ptr().cast::<K>()),
                std::ptr::read_unaligned(value.as_ptr().cast::<V>()),
            )
        });
    }
    out
}
