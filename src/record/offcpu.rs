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
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use libbpf_rs::OpenObject;

use super::stack_book::StackBook;
use super::unwind_sync::UnwindSync;
use super::{Collected, Recorder, Recording, Session, SummaryInfo, Values, WhenEmpty, FINAL_DRAIN};
use crate::config::{OffcpuStates, RecordConfig};
use crate::probe::offcpu::{OffcpuConfig, OffcpuProbe, OffcpuStats, StateFilter, StillOff};
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
    /// What earlier windows took (continuous mode).
    taken: Taken,
}

/// Key of an in-kernel total: process, thread, stack.
type TotalKey = (u32, u32, u64);

/// What earlier windows of a continuous recording took, so that each
/// window holds the time off the CPU *in* it: the kernel's totals as last
/// read, the part of episodes still going on that was given to a window
/// already (a thread asleep across windows counts in each), and what
/// those episodes owe once the kernel adds them whole.
#[derive(Default)]
struct Taken {
    totals: HashMap<TotalKey, (u64, u64)>,
    /// Per thread off the CPU: since when, its stack, the time given.
    ongoing: HashMap<u32, Ongoing>,
    /// Time and episodes to take off the next totals of a key.
    owed: HashMap<TotalKey, (u64, u64)>,
}

struct Ongoing {
    pid: u32,
    since: u64,
    stack_id: u64,
    given_ns: u64,
}

/// Threads still off the CPU at the end of a recording, and what the
/// filters left out of their time (for the summary).
#[derive(Default)]
struct StillOffTally {
    ns: u64,
    threads: u64,
    state_ns: u64,
    short_ns: u64,
    short: u64,
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
            taken: Taken::default(),
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

    /// Continuous mode: adds the time off the CPU since the last window
    /// to the stacks, each as `values(ns, episodes)`, and forgets threads
    /// that are gone; the probe stays attached.
    pub fn end_window(&mut self, config: &RecordConfig, values: EpisodeValues) {
        self.add_until(config, values, monotonic_ns());
        self.forget_gone();
    }

    /// Adds to the stacks the time off the CPU up to `now` that no window
    /// took yet: the kernel's totals since the last read, less what
    /// earlier windows gave episodes that have ended since; and threads
    /// off the CPU now, up to now (as the kernel would count them: up to
    /// their wake-up with a --state filter, never shorter than
    /// --min-block).
    fn add_until(
        &mut self,
        config: &RecordConfig,
        values: EpisodeValues,
        now: u64,
    ) -> StillOffTally {
        // Totals first: an episode that ends between the two reads is in
        // neither, and comes with the next totals.
        let totals = self.probe.totals();
        let still = self.probe.still_off();
        let b = self.book.borrow();
        let mut stacks = b.stacks.borrow_mut();
        let taken = &mut self.taken;
        let still_by_tid: HashMap<u32, &StillOff> = still.iter().map(|s| (s.tid, s)).collect();
        // Episodes given to a window before that have ended since: the
        // kernel adds them whole, so what was given is owed.
        taken.ongoing.retain(|tid, o| {
            if still_by_tid.get(tid).is_some_and(|s| s.since == o.since) {
                return true;
            }
            let owed = taken.owed.entry((o.pid, *tid, o.stack_id)).or_default();
            owed.0 = owed.0.saturating_add(o.given_ns);
            owed.1 += 1;
            false
        });
        for t in &totals {
            let key = (t.pid, t.tid, t.stack_id);
            let (ns0, n0) = taken.totals.insert(key, (t.ns, t.count)).unwrap_or((0, 0));
            let (mut ns, mut n) = (t.ns.saturating_sub(ns0), t.count.saturating_sub(n0));
            if let Some(owed) = taken.owed.get_mut(&key) {
                let (pay_ns, pay_n) = (owed.0.min(ns), owed.1.min(n));
                (ns, n) = (ns - pay_ns, n - pay_n);
                (owed.0, owed.1) = (owed.0 - pay_ns, owed.1 - pay_n);
                if *owed == (0, 0) {
                    taken.owed.remove(&key);
                }
            }
            if ns > 0 || n > 0 {
                stacks.add(b.ids.get(t.stack_id), &values(ns, n));
            }
        }
        let min_block = config.offcpu.min_block.as_nanos() as u64;
        let filtered_states = config.offcpu.states != OffcpuStates::All;
        let mut tally = StillOffTally::default();
        for s in still.iter().filter(|s| s.since <= now) {
            let mut away = now - s.since;
            // As in the kernel: once woken, the wait for a CPU is another
            // state.
            if let Some(woken) = s
                .woken
                .filter(|&w| filtered_states && s.state != 0 && w <= now)
            {
                tally.state_ns = tally.state_ns.saturating_add(now - woken);
                away = woken.saturating_sub(s.since);
            }
            if s.stack_id == 0 {
                tally.state_ns = tally.state_ns.saturating_add(away);
                continue;
            }
            if away < min_block {
                tally.short_ns = tally.short_ns.saturating_add(away);
                tally.short += 1;
                continue;
            }
            let ongoing = taken.ongoing.entry(s.tid).or_insert(Ongoing {
                pid: s.pid,
                since: s.since,
                stack_id: s.stack_id,
                given_ns: 0,
            });
            let episodes = u64::from(ongoing.given_ns == 0);
            let add = away.saturating_sub(ongoing.given_ns);
            ongoing.given_ns = away;
            if add > 0 || episodes > 0 {
                stacks.add(b.ids.get(s.stack_id), &values(add, episodes));
            }
            tally.ns = tally.ns.saturating_add(away);
            tally.threads += 1;
        }
        tally
    }

    /// Forgets the totals and stacks of threads that are gone (their time
    /// was taken by now), in the kernel and here.
    fn forget_gone(&mut self) {
        let gone: Vec<crate::probe::offcpu::OffcpuTotal> = self
            .taken
            .totals
            .keys()
            .filter(|(pid, tid, _)| !crate::proc::thread_alive(*pid, *tid))
            .map(|&(pid, tid, stack_id)| crate::probe::offcpu::OffcpuTotal {
                pid,
                tid,
                stack_id,
                ns: 0,
                count: 0,
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        for t in &gone {
            let key = (t.pid, t.tid, t.stack_id);
            self.taken.totals.remove(&key);
            self.taken.owed.remove(&key);
        }
        let mut live: std::collections::HashSet<u64> =
            self.taken.totals.keys().map(|k| k.2).collect();
        live.extend(self.taken.ongoing.values().map(|o| o.stack_id));
        let dropped = self.book.borrow_mut().ids.forget(|id, stack| {
            !live.contains(&id)
                && stack.labels.pid.is_some_and(|pid| {
                    !crate::proc::thread_alive(pid, stack.labels.tid.unwrap_or(pid))
                })
        });
        self.probe.forget(&gone, &dropped);
        log::debug!(
            "forgot {} off-CPU totals and {} stacks of threads that are gone",
            gone.len(),
            dropped.len()
        );
    }

    /// Stops the probe and adds what was recorded to the stacks (what no
    /// window took), each episode as `values(ns, count)`. Threads still
    /// off the CPU count up to now.
    pub fn finish(mut self, config: &RecordConfig, values: EpisodeValues) -> OffcpuOutcome {
        let complete = self.probe.stop(FINAL_DRAIN);
        let now = monotonic_ns();
        let stats = self.probe.stats();
        let tally = self.add_until(config, values, now);
        let min_block = config.offcpu.min_block.as_nanos() as u64;
        let (still_ns, still_threads) = (tally.ns, tally.threads);
        let left_state = stats.state_ns.saturating_add(tally.state_ns);
        let left_short = stats.short_ns.saturating_add(tally.short_ns);
        let left_short_n = stats.short + tally.short;

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

    fn end_window(&mut self, session: &Session<'_>) -> Result<(Values, u64)> {
        self.part
            .end_window(session.config, |ns, count| vec![ns, count]);
        let values = Values {
            sample_types: offcpu_types(),
            period: None,
            frequency: None,
        };
        Ok((values, self.part.stats().lost()))
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
