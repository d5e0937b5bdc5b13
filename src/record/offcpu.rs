//! `--probe offcpu`: time the target threads spent off the CPU (blocked,
//! sleeping, waiting, preempted), per thread and stack, in nanoseconds.
//! [`OffcpuPart`] is also the off-CPU half of `--probe wall`.
//!
//! The kernel adds up the time (bpf/offcpu.bpf.c); stacks arrive once each
//! and are resolved while their process lives. User stacks are unwound in
//! the kernel with each binary's CFI (`--unwind auto|dwarf`), whose tables
//! are loaded for the named targets at the start and for other processes
//! when their first stack arrives; `--unwind fp` walks frame pointers.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use libbpf_rs::OpenObject;

use super::stack_book::StackBook;
use super::unwind_sync::UnwindSync;
use super::{Collected, Recorder, Recording, Session, SummaryInfo, WhenEmpty, FINAL_DRAIN};
use crate::config::{OffcpuStates, RecordConfig};
use crate::probe::offcpu::{OffcpuConfig, OffcpuProbe, OffcpuStats, StateFilter};
use crate::probe::targets::TargetMaps;
use crate::probe::Delivery;
use crate::profile::{units, ValueType};
use crate::stacks::{RawStack, StackCollector};
use crate::unwind::{UnwindMode, Unwinder, UserSnapshot};

/// Threads that can be off the CPU at once, and (thread, stack) totals.
const MAX_THREADS: u32 = 1 << 16;
const MAX_TOTALS: u32 = 1 << 18;

/// The values one episode off the CPU adds to its stack: its time and how
/// many episodes it stands for.
pub(super) type EpisodeValues = fn(ns: u64, count: u64) -> Vec<u64>;

/// Stacks as they arrive.
struct Book {
    stacks: Rc<RefCell<StackCollector>>,
    ids: StackBook,
    /// Processes seen in stacks whose unwind tables are not loaded yet.
    new_pids: Vec<u32>,
    seen_pids: std::collections::HashSet<u32>,
}

/// The attached sched_switch program feeding a stack collector.
pub(super) struct OffcpuPart<'obj> {
    probe: OffcpuProbe<'obj>,
    book: Rc<RefCell<Book>>,
    /// None with --unwind fp (no tables: frame pointers).
    unwind: Option<UnwindSync>,
}

/// What the probe reports when it stops.
pub(super) struct OffcpuOutcome {
    pub lost: u64,
    pub notes: Vec<String>,
}

impl<'obj> OffcpuPart<'obj> {
    pub fn attach(
        session: &Session<'_>,
        storage: &'obj mut MaybeUninit<OpenObject>,
        stacks: Rc<RefCell<StackCollector>>,
    ) -> Result<Self> {
        let config = session.config;
        let probe_config = OffcpuConfig {
            filter: session.filter.clone(),
            threads: session.threads.clone(),
            min_block: config.offcpu.min_block,
            states: match config.offcpu.states {
                OffcpuStates::All => StateFilter::All,
                OffcpuStates::Sleep => StateFilter::Sleep,
                OffcpuStates::Disk => StateFilter::Disk,
            },
            max_threads: MAX_THREADS,
            max_totals: MAX_TOTALS,
        };
        let book = Rc::new(RefCell::new(Book {
            stacks,
            ids: StackBook::default(),
            new_pids: Vec::new(),
            seen_pids: Default::default(),
        }));
        let sink = book.clone();
        let probe = OffcpuProbe::attach(storage, &probe_config, move |rec| {
            let b = &mut *sink.borrow_mut();
            b.ids.add(&mut b.stacks.borrow_mut(), &rec, false);
            let pid = rec.pid();
            if pid != 0 && b.seen_pids.insert(pid) {
                b.new_pids.push(pid);
            }
        })?;
        let mut part = OffcpuPart {
            probe,
            book,
            unwind: (config.unwind != UnwindMode::Fp).then(UnwindSync::new),
        };
        if let Some(unwind) = &mut part.unwind {
            // Named targets (and a launched command, once it runs its
            // own program) are kept in step at every poll.
            unwind.pids.extend(session.filter.pids());
            let b = part.book.borrow();
            let mut stacks = b.stacks.borrow_mut();
            unwind.sync_all(&part.probe.unwind_maps(), &mut stacks.table);
        }
        part.seed_blocked()?;
        Ok(part)
    }

    /// Threads already off the CPU when the recording starts: their time
    /// counts from now, with the stack they are in (the kernel part from
    /// the task iterator, the user part read from their memory and unwound
    /// here with the same DWARF unwinder as CPU samples).
    fn seed_blocked(&mut self) -> Result<()> {
        let blocked = self.probe.blocked_now()?;
        let now = monotonic_ns();
        let mut unwinder = Unwinder::new(UnwindMode::Dwarf);
        let b = &mut *self.book.borrow_mut();
        let mut stacks = b.stacks.borrow_mut();
        for (n, t) in blocked.iter().enumerate() {
            let (pid, tid) = (t.pid(), t.tid());
            let unwound = match t.user_regs() {
                Some(regs) => {
                    let copy = read_user_stack(pid, regs.sp, &mut stacks.table);
                    let snap = UserSnapshot {
                        pid,
                        regs: Some(regs),
                        stack: &copy.bytes,
                        stack_ends_in_copy: copy.reached_end,
                        fp_frames: &[],
                    };
                    unwinder.unwind(&snap, &mut stacks.table)
                }
                None => Default::default(),
            };
            let labels =
                stacks
                    .table
                    .labels(pid, Some(tid), t.process_name(), Some(t.thread_name()));
            let raw = RawStack {
                labels,
                kernel: t.kernel_stack().to_vec(),
                user: stacks.resolve_user(pid, &unwound.frames),
                truncated: unwound.truncated,
            };
            // Even ids: the BPF program's hashes are odd.
            let id = SEEDED_IDS | ((n as u64) << 1);
            b.ids.insert(id, raw);
            self.probe.seed(t, id, now)?;
        }
        log::info!(
            "{} target threads were already off the CPU: counted from now",
            blocked.len()
        );
        Ok(())
    }

    pub fn poll(&mut self, until: Instant) {
        self.probe.wait(until);
        self.consume(until);
    }

    /// Takes in the stacks queued now (without waiting).
    pub fn consume(&mut self, until: Instant) {
        self.book.borrow().stacks.borrow_mut().sync();
        self.probe.consume(until);
        let Some(unwind) = &mut self.unwind else {
            return;
        };
        let maps = self.probe.unwind_maps();
        let b = &mut *self.book.borrow_mut();
        let mut stacks = b.stacks.borrow_mut();
        unwind.sync_all(&maps, &mut stacks.table);
        // Other processes: tables once, at their first stack.
        for pid in std::mem::take(&mut b.new_pids) {
            if !unwind.pids.contains(&pid) {
                unwind.sync(&maps, &mut stacks.table, pid);
            }
        }
    }

    pub fn stats(&self) -> OffcpuStats {
        self.probe.stats()
    }

    pub fn target_maps(&self) -> TargetMaps<'_> {
        self.probe.target_maps()
    }

    /// Stops the probe and adds what was recorded to the stacks, each
    /// episode as `values(ns, count)`. Threads still off the CPU count up
    /// to now.
    pub fn finish(mut self, config: &RecordConfig, values: EpisodeValues) -> OffcpuOutcome {
        let complete = self.probe.stop(FINAL_DRAIN);
        let now = monotonic_ns();
        let stats = self.probe.stats();
        let totals = self.probe.totals();
        let still = self.probe.still_off();
        let b = self.book.borrow();
        let mut stacks = b.stacks.borrow_mut();
        for t in &totals {
            stacks.add(b.ids.get(t.stack_id), &values(t.ns, t.count));
        }
        let min_block = config.offcpu.min_block.as_nanos() as u64;
        let (mut still_ns, mut still_threads) = (0u64, 0u64);
        let (mut left_state, mut left_short, mut left_short_n) =
            (stats.state_ns, stats.short_ns, stats.short);
        let filtered_states = config.offcpu.states != OffcpuStates::All;
        for s in still.iter().filter(|s| s.since <= now) {
            let mut away = now - s.since;
            // As in the kernel: once woken, the wait for a CPU is another
            // state.
            if let Some(woken) = s
                .woken
                .filter(|&w| filtered_states && s.state != 0 && w <= now)
            {
                left_state = left_state.saturating_add(now - woken);
                away = woken.saturating_sub(s.since);
            }
            if s.stack_id == 0 {
                left_state = left_state.saturating_add(away);
            } else if away < min_block {
                left_short = left_short.saturating_add(away);
                left_short_n += 1;
            } else {
                stacks.add(b.ids.get(s.stack_id), &values(away, 1));
                still_ns = still_ns.saturating_add(away);
                still_threads += 1;
            }
        }

        let ns = |v: u64| units::format(units::NANOSECONDS, v);
        let mut notes = Vec::new();
        if still_threads > 0 {
            notes.push(format!(
                "{still_threads} threads were still off the CPU at the end: their time counts \
                 up to the end ({})",
                ns(still_ns)
            ));
        }
        if config.offcpu.states != OffcpuStates::All {
            notes.push(format!(
                "left out by --state: {} off the CPU for other reasons",
                ns(left_state)
            ));
        }
        notes.push(format!(
            "left out by --min-block {}: {} in {left_short_n} shorter times off the CPU",
            ns(min_block),
            ns(left_short)
        ));
        if stats.start_full + stats.totals_full > 0 {
            notes.push(format!(
                "warning: {} times off the CPU were not recorded (tables full: {} threads \
                 off at once, {} thread/stack totals): record fewer targets",
                stats.start_full + stats.totals_full,
                MAX_THREADS,
                MAX_TOTALS
            ));
        }
        if stats.stack_lost > 0 {
            notes.push(format!(
                "{} stacks could not be delivered (ring buffer full); their time is under [truncated]",
                stats.stack_lost
            ));
        }
        if !complete {
            notes.push(
                "warning: stacks were still queued when the recording ended and were not read"
                    .into(),
            );
        }
        if stats.targets_full > 0 {
            notes.push(format!(
                "warning: {} processes started by the targets were not followed (target table full)",
                stats.targets_full
            ));
        }
        OffcpuOutcome {
            lost: stats.lost(),
            notes,
        }
    }
}

/// Stack ids of threads already off the CPU at the start.
const SEEDED_IDS: u64 = 1 << 63;

/// Bytes of user stack read from a blocked thread for unwinding.
const SEED_STACK_COPY: u64 = 32 * 1024;

/// A copy of the top of a thread's user stack.
struct StackCopy {
    bytes: Vec<u8>,
    /// The copy reached the end of the stack's mapping.
    reached_end: bool,
}

/// Reads the top of the user stack of process `pid` from `sp`, up to the
/// end of its mapping, from the process's memory.
fn read_user_stack(pid: u32, sp: u64, table: &mut crate::process::ProcessTable) -> StackCopy {
    let end = table.find(pid, sp).map(|m| m.entry.end).unwrap_or(sp);
    let len = end.saturating_sub(sp).min(SEED_STACK_COPY);
    let mut bytes = vec![0u8; len as usize];
    let read = crate::proc::read_memory(pid, sp, &mut bytes).unwrap_or(0);
    bytes.truncate(read);
    StackCopy {
        reached_end: read as u64 == len && len < SEED_STACK_COPY,
        bytes,
    }
}

fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => u64::MAX,
    }
}

struct OffcpuRecorder<'obj> {
    part: OffcpuPart<'obj>,
    stacks: Rc<RefCell<StackCollector>>,
}

/// Attaches the sched_switch program for the session's targets.
pub(super) fn attach<'obj>(
    session: &Session<'_>,
    storage: &'obj mut MaybeUninit<OpenObject>,
) -> Result<Box<dyn Recorder + 'obj>> {
    let stacks = Rc::new(RefCell::new(StackCollector::new()));
    let part = OffcpuPart::attach(session, storage, stacks.clone())?;
    Ok(Box::new(OffcpuRecorder { part, stacks }))
}

impl Recorder for OffcpuRecorder<'_> {
    fn poll(&mut self, until: Instant) {
        self.part.poll(until);
    }

    fn target_maps(&self) -> Vec<TargetMaps<'_>> {
        vec![self.part.target_maps()]
    }

    fn with_stacks(&self, f: &mut dyn FnMut(&mut StackCollector)) {
        f(&mut self.stacks.borrow_mut())
    }

    fn progress(&self) -> String {
        let s = self.part.stats();
        format!("{} times off the CPU, {} lost", s.switches, s.lost())
    }

    fn finish(self: Box<Self>, session: &Session<'_>, rec: &Recording) -> Result<Collected> {
        let OffcpuRecorder { part, stacks } = *self;
        let out = part.finish(session.config, |ns, count| vec![ns, count]);
        let stacks = Rc::try_unwrap(stacks)
            .map_err(|_| anyhow::anyhow!("stack collector still shared after detach"))?
            .into_inner();
        Ok(Collected {
            stacks,
            sample_types: offcpu_types(),
            period: None,
            frequency: None,
            lost: out.lost,
            summary: SummaryInfo {
                notes: out.notes,
                list_stacks: false,
                truncation_hint: None,
                ..SummaryInfo::default()
            },
            when_empty: WhenEmpty::Error(format!(
                "no thread of {} was off the CPU for {} or more in {:.1}s",
                session.describe(),
                units::format(
                    units::NANOSECONDS,
                    session.config.offcpu.min_block.as_nanos() as u64
                ),
                rec.recorded.as_secs_f64()
            )),
        })
    }
}

/// The sample types of an off-CPU profile: time and episodes.
pub(super) fn offcpu_types() -> Vec<ValueType> {
    vec![
        ValueType::new("offcpu", units::NANOSECONDS),
        ValueType::new("episodes", units::COUNT),
    ]
}
