//! `flameprobe record --probe memleak|kmemleak`: memory allocated during
//! the recording and still not freed at its end, weighted in bytes.
//!
//! target -> allocator uprobes (or kmem tracepoints) -> in-kernel
//! bookkeeping until duration / signal / target exit -> read what is still
//! outstanding -> aggregate by stack -> symbolize -> Profile -> output.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Result};
use libbpf_rs::OpenObject;

use super::stack_book::StackBook;
use super::unwind_sync::UnwindSync;
use super::{Collected, Recorder, Recording, Session, SummaryInfo, Values, WhenEmpty, FINAL_DRAIN};
use crate::allocator;
use crate::config::{MemleakOptions, ProbeKind};
use crate::probe::memleak::{
    unsample, Allocators, MemleakConfig, MemleakEvent, MemleakProbe, MemleakStats, Outstanding,
};
use crate::probe::targets::TargetMaps;
use crate::probe::Delivery;
use crate::process::{FileKey, ProcessTable};
use crate::profile::{units, ValueType};
use crate::stacks::StackCollector;
use crate::target::TargetSpec;

/// Most outstanding allocations tracked at once.
const MAX_OUTSTANDING: u32 = 1 << 20;

/// Stacks as they arrive, normalized while their process is alive.
struct Book {
    stacks: StackCollector,
    ids: StackBook,
    /// Launched commands stopped at their entry point, waiting for their
    /// unwind tables.
    stopped: Vec<u32>,
    /// Processes of a launched command stopped at exec, waiting for the
    /// new program's allocators to be probed.
    execs: Vec<u32>,
}

struct MemleakRecorder<'obj> {
    probe: MemleakProbe<'obj>,
    book: Rc<RefCell<Book>>,
    unwind: UnwindSync,
    kernel: bool,
    options: MemleakOptions,
    /// What is recorded, for messages.
    target: String,
    /// Executables with a stop at their entry point already.
    entries: HashSet<FileKey>,
    /// Processes whose program has no allocator flameprobe can probe.
    unprobed: Vec<String>,
}

/// Attaches the allocator probes (or the kmem tracepoints) for the
/// session's targets.
pub(super) fn attach<'obj>(
    session: &Session<'_>,
    storage: &'obj mut MaybeUninit<OpenObject>,
) -> Result<Box<dyn Recorder + 'obj>> {
    let config = session.config;
    let kernel = config.probe == ProbeKind::Kmemleak;
    let probe_config = MemleakConfig {
        allocators: if kernel {
            Allocators::Kernel
        } else {
            Allocators::User
        },
        filter: session.filter.clone(),
        threads: session.threads.clone(),
        sample_bytes: config.memleak.sample_bytes,
        max_outstanding: MAX_OUTSTANDING,
    };

    let book = Rc::new(RefCell::new(Book {
        stacks: StackCollector::new(),
        ids: StackBook::default(),
        stopped: Vec::new(),
        execs: Vec::new(),
    }));
    let sink = book.clone();
    let mut probe = MemleakProbe::attach(storage, &probe_config, move |ev| match ev {
        MemleakEvent::Stack(rec) => {
            let b = &mut *sink.borrow_mut();
            b.ids.add(&mut b.stacks, &rec, true);
        }
        MemleakEvent::Stopped(pid) => sink.borrow_mut().stopped.push(pid),
        MemleakEvent::Exec(pid) => sink.borrow_mut().execs.push(pid),
    })?;
    let mut unwind = UnwindSync::new();
    let mut entries = HashSet::new();
    if !kernel {
        match (&session.target, &session.command) {
            (TargetSpec::Pids(_), _) => {
                for &pid in session.filter.pids() {
                    let mut b = book.borrow_mut();
                    attach_process(&mut probe, &mut b.stacks.table, pid)?;
                    unwind.sync(&probe.unwind_maps(), &mut b.stacks.table, pid);
                    unwind.pids.push(pid);
                }
            }
            (TargetSpec::Containers(_), _) => {
                let pids = session.containers.as_ref().map(|w| w.pids());
                for pid in pids.unwrap_or_default() {
                    let mut b = book.borrow_mut();
                    attach_member(&mut probe, &mut b.stacks.table, &mut unwind, pid);
                }
            }
            (TargetSpec::Command(argv), Some(command)) => {
                let bins = allocator::command_binaries(&argv[0]);
                if attach_image(&mut probe, &bins)? == 0 {
                    bail!(
                        "found no allocator to probe for `{}`: it is not dynamically linked \
                         against libc and defines no malloc and free symbols",
                        argv[0].to_string_lossy()
                    );
                }
                // Its tables are loaded when it reaches its entry point,
                // where it stops until they are (or at the next poll).
                if let Some(exe) = &bins.executable {
                    stop_at_entry(&mut probe, &mut entries, exe);
                }
                unwind.pids.push(command.pid());
            }
            _ => bail!("--probe memleak needs --pid, --container or a command"),
        }
    }
    Ok(Box::new(MemleakRecorder {
        probe,
        book,
        unwind,
        kernel,
        options: config.memleak,
        target: session.describe(),
        entries,
        unprobed: Vec::new(),
    }))
}

impl MemleakRecorder<'_> {
    /// A process of the command exec'd a new program and waits: probe the
    /// new program's allocators and entry point, then let it run.
    fn new_image(&mut self, pid: u32) {
        // The old program's memory went with its address space.
        match self.probe.forget_process(pid) {
            Ok(n) => log::debug!("pid {pid} exec'd: {n} allocations of its old program dropped"),
            Err(e) => log::warn!("{e}"),
        }
        let bins = allocator::process_image_binaries(pid);
        match attach_image(&mut self.probe, &bins) {
            Ok(0) => {
                let name = bins
                    .executable
                    .as_ref()
                    .map_or_else(|| format!("pid {pid}"), |e| e.display().to_string());
                log::warn!(
                    "{name} (pid {pid}) has no allocator flameprobe can probe: its \
                     allocations are not recorded"
                );
                self.unprobed.push(format!("{name} (pid {pid})"));
            }
            Ok(n) => log::info!("pid {pid} exec'd: {n} allocator binaries probed"),
            Err(e) => {
                log::warn!("pid {pid}: {e:#}; its allocations are not recorded");
                self.unprobed.push(format!("pid {pid}"));
            }
        }
        if let Some(exe) = &bins.executable {
            stop_at_entry(&mut self.probe, &mut self.entries, exe);
        }
        if !self.unwind.pids.contains(&pid) {
            self.unwind.pids.push(pid);
        }
        resume(pid);
    }
}

impl Recorder for MemleakRecorder<'_> {
    fn poll(&mut self, until: Instant) {
        self.probe.wait(until);
        self.book.borrow_mut().stacks.sync();
        self.probe.consume(until);
        let mut b = self.book.borrow_mut();
        self.unwind
            .sync_all(&self.probe.unwind_maps(), &mut b.stacks.table);
        let execs = std::mem::take(&mut b.execs);
        drop(b);
        for pid in execs {
            self.new_image(pid);
        }
        let mut b = self.book.borrow_mut();
        for pid in std::mem::take(&mut b.stopped) {
            self.unwind
                .sync(&self.probe.unwind_maps(), &mut b.stacks.table, pid);
            resume(pid);
        }
    }

    fn target_maps(&self) -> Vec<TargetMaps<'_>> {
        vec![self.probe.target_maps()]
    }

    fn with_stacks(&self, f: &mut dyn FnMut(&mut StackCollector)) {
        f(&mut self.book.borrow_mut().stacks)
    }

    fn add_processes(&mut self, pids: &[u32]) {
        if self.kernel {
            return;
        }
        let mut b = self.book.borrow_mut();
        for &pid in pids {
            attach_member(&mut self.probe, &mut b.stacks.table, &mut self.unwind, pid);
        }
    }

    fn progress(&self) -> String {
        let s = self.probe.stats();
        format!(
            "{} allocations, {} freed, {} lost",
            s.allocs,
            s.frees,
            s.lost()
        )
    }

    /// What is outstanding now, of allocations made since the recording
    /// started (older than --min-age), as at the end of a recording.
    /// Processes that have exited count in this window with what they had
    /// outstanding, then are forgotten (in the kernel too): the table
    /// stays bounded however long the recording runs.
    fn end_window(&mut self, _session: &Session<'_>) -> Result<(Values, u64)> {
        let now = monotonic_ns();
        let outstanding = self.probe.outstanding()?;
        let totals = aggregate(
            &outstanding,
            now,
            self.options.min_age.as_nanos() as u64,
            self.options.sample_bytes,
            self.kernel,
        );
        let mut b = self.book.borrow_mut();
        let b = &mut *b;
        for (stack_id, (bytes, count)) in totals {
            b.stacks.add(b.ids.get(stack_id), &[bytes, count]);
        }
        if !self.kernel {
            let mut gone: Vec<u32> = outstanding
                .iter()
                .map(|o| o.tgid)
                .filter(|&pid| !crate::proc::process_alive(pid))
                .collect();
            gone.sort_unstable();
            gone.dedup();
            for &pid in &gone {
                if let Err(e) = self.probe.forget_process(pid) {
                    log::warn!("{e}");
                }
            }
            let dropped = b.ids.forget(|_, stack| {
                stack
                    .labels
                    .pid
                    .is_some_and(|pid| !crate::proc::process_alive(pid))
            });
            self.probe.forget_stacks(&dropped);
        }
        Ok((values(), self.probe.stats().lost()))
    }

    fn finish(self: Box<Self>, _session: &Session<'_>, rec: &Recording) -> Result<Collected> {
        let MemleakRecorder {
            mut probe,
            book,
            kernel,
            options,
            target,
            unprobed,
            ..
        } = *self;
        // Stop recording, then read the state at this instant.
        probe.detach();
        let now = monotonic_ns();
        probe.drain(FINAL_DRAIN);
        // Never leave a command stopped at its entry point behind.
        for pid in std::mem::take(&mut book.borrow_mut().stopped) {
            resume(pid);
        }
        let stats = probe.stats();
        let outstanding = probe.outstanding()?;
        drop(probe);
        let book = Rc::try_unwrap(book)
            .map_err(|_| anyhow::anyhow!("stack collector still shared after detach"))?
            .into_inner();

        let totals = aggregate(
            &outstanding,
            now,
            options.min_age.as_nanos() as u64,
            options.sample_bytes,
            kernel,
        );
        let mut stacks = book.stacks;
        for (stack_id, (bytes, count)) in totals {
            stacks.add(book.ids.get(stack_id), &[bytes, count]);
        }
        let v = values();
        Ok(Collected {
            stacks,
            sample_types: v.sample_types,
            period: v.period,
            frequency: v.frequency,
            lost: stats.lost(),
            summary: SummaryInfo {
                notes: notes(&stats, &unprobed),
                list_stacks: true,
                // The in-kernel unwinder's depth is fixed.
                truncation_hint: None,
                ..SummaryInfo::default()
            },
            when_empty: WhenEmpty::Note(if unprobed.is_empty() {
                format!(
                    "nothing outstanding: every allocation {target} made during the {:.1}s \
                     recording (older than {:?}) was freed ({} allocations, {} frees, {} lost)",
                    rec.recorded.as_secs_f64(),
                    options.min_age,
                    stats.allocs,
                    stats.frees,
                    stats.lost()
                )
            } else {
                format!(
                    "nothing outstanding in the programs whose allocator could be probed \
                     ({} allocations, {} frees); {} programs had none, and their allocations \
                     were not recorded: {}",
                    stats.allocs,
                    stats.frees,
                    unprobed.len(),
                    unprobed.join(", ")
                )
            }),
        })
    }
}

/// The values of a leak profile: bytes and allocations outstanding.
fn values() -> Values {
    Values {
        sample_types: vec![
            ValueType::new("inuse_space", units::BYTES),
            ValueType::new("inuse_objects", units::COUNT),
        ],
        period: None,
        frequency: None,
    }
}

/// The summary's lines about the probe's own counters, and the processes
/// whose allocations could not be recorded at all.
fn notes(stats: &MemleakStats, unprobed: &[String]) -> Vec<String> {
    let mut out = vec![format!(
        "{} allocations and {} frees seen during the recording, {} lost",
        stats.allocs,
        stats.frees,
        stats.lost()
    )];
    if stats.map_full > 0 {
        out.push(format!(
            "{} allocations were not tracked because the table of outstanding \
             allocations was full: use --sample-bytes",
            stats.map_full
        ));
    }
    if stats.stack_lost > 0 {
        out.push(format!(
            "{} stacks could not be delivered (ring buffer full); their bytes are under [truncated]",
            stats.stack_lost
        ));
    }
    if stats.bpf_self > 0 {
        out.push(format!(
            "{} allocations of the kernel's BPF allocator (BPF maps' memory, this \
             recording's and other tracers') were left out",
            stats.bpf_self
        ));
    }
    if stats.irq_skipped > 0 {
        out.push(format!(
            "{} allocations made in interrupt context (they belong to no process) were left \
             out; record the whole machine to see them",
            stats.irq_skipped
        ));
    }
    if !unprobed.is_empty() {
        out.push(format!(
            "warning: {} programs of the command had no allocator flameprobe could probe, \
             so their allocations are missing (and not in the lost count): {}",
            unprobed.len(),
            unprobed.join(", ")
        ));
    }
    if stats.targets_full > 0 {
        out.push(format!(
            "warning: {} processes started by the targets were not followed (target table full)",
            stats.targets_full
        ));
    }
    out
}

/// Makes a launched command stop at its executable's entry point, so that
/// its unwind tables are loaded before its own code runs. Without it (no
/// ELF executable found) they are loaded at the next poll instead.
fn stop_at_entry(probe: &mut MemleakProbe<'_>, done: &mut HashSet<FileKey>, exe: &Path) {
    let Ok(file) = crate::safe_fs::open_own_file(exe) else {
        return;
    };
    match file.metadata() {
        Ok(m) if done.insert(FileKey::of_metadata(&m)) => {}
        _ => return, // stopped there already
    }
    match allocator::program_entry(&file) {
        Ok(offset) => {
            if let Err(e) = probe.attach_entry(exe, offset) {
                log::info!("{e}; unwind tables are loaded at the first poll");
            }
        }
        Err(e) => log::info!("{}: {e}", exe.display()),
    }
}

/// Lets a process stopped at its entry point run on.
fn resume(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGCONT);
}

/// Bytes and allocations per stack id, leaving out allocations younger than
/// `min_age_ns` of processes still running (an exited process freed
/// nothing of what it had outstanding at exit). Sampled sizes are scaled to
/// unbiased estimates.
fn aggregate(
    outstanding: &[Outstanding],
    now_ns: u64,
    min_age_ns: u64,
    sample_bytes: u64,
    kernel: bool,
) -> Vec<(u64, (u64, u64))> {
    let mut alive: HashMap<u32, bool> = HashMap::new();
    let mut sums: HashMap<u64, (f64, f64)> = HashMap::new();
    for o in outstanding {
        let running = kernel
            || *alive
                .entry(o.tgid)
                .or_insert_with(|| crate::proc::process_alive(o.tgid));
        if running && now_ns.saturating_sub(o.ts) < min_age_ns {
            continue;
        }
        let (bytes, count) = unsample(o.size, sample_bytes);
        let e = sums.entry(o.stack_id).or_default();
        e.0 += bytes;
        e.1 += count;
    }
    let mut out: Vec<(u64, (u64, u64))> = sums
        .into_iter()
        .map(|(id, (b, c))| (id, (b.round() as u64, c.round() as u64)))
        .filter(|(_, (b, c))| *b > 0 || *c > 0)
        .collect();
    out.sort_unstable();
    out
}

fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => u64::MAX,
    }
}

/// Probes a process of a recorded container: its allocators, and its
/// unwind tables from then on. A process whose allocator cannot be probed
/// is left out with a warning (the container's other processes are not).
fn attach_member(
    probe: &mut MemleakProbe<'_>,
    table: &mut ProcessTable,
    unwind: &mut UnwindSync,
    pid: u32,
) {
    if let Err(e) = attach_process(probe, table, pid) {
        log::warn!("{e:#}; its allocations are not recorded");
        return;
    }
    unwind.sync(&probe.unwind_maps(), table, pid);
    unwind.pids.push(pid);
}

/// Probes the allocators a running process has mapped: libc, jemalloc,
/// tcmalloc, mimalloc, or its executable when linked statically.
fn attach_process(probe: &mut MemleakProbe<'_>, table: &mut ProcessTable, pid: u32) -> Result<()> {
    if crate::proc::is_kernel_thread(pid) {
        bail!(
            "pid {pid} is a kernel thread: it has no user-space allocator to probe \
             (--probe kmemleak records kernel allocations)"
        );
    }
    let exe = crate::proc::exe_key(pid).ok();
    let info = table.get(pid);
    if info.unavailable {
        bail!("cannot read the memory maps of pid {pid} (did it exit?)");
    }
    let mut modules = Vec::new();
    for m in &info.mappings {
        let Some(module) = &m.module else { continue };
        let candidate = allocator::is_allocator_library(&module.path) || Some(module.key) == exe;
        if m.entry.executable
            && candidate
            && !modules
                .iter()
                .any(|x: &std::sync::Arc<_>| std::sync::Arc::ptr_eq(x, module))
        {
            modules.push(module.clone());
        }
    }
    let mut attached = 0;
    for module in modules {
        let eps = match allocator::entry_points_of(&module.file) {
            Ok(eps) => eps,
            Err(e) => {
                log::info!("{}: {e}", module.path);
                continue;
            }
        };
        if eps.is_empty() {
            continue;
        }
        log::info!(
            "pid {pid}: probing {} allocator entry points in {}",
            eps.len(),
            module.path
        );
        probe.attach_allocator(pid as i32, module.key, &module.fd_path(), &eps)?;
        attached += 1;
    }
    if attached == 0 {
        bail!(
            "pid {pid} has no allocator flameprobe can probe: no mapped libc, jemalloc, \
             tcmalloc or mimalloc, and its executable defines no malloc and free symbols \
             (a stripped static binary?)"
        );
    }
    Ok(())
}

/// Probes the allocators a program will use once it runs: a static
/// allocator in its executable, allocator libraries it needs or preloads,
/// and the system libc when it is dynamically linked. Probes cover every
/// process mapping these files and are filtered to the command and its
/// children in BPF. Returns how many of the files are allocators (probed
/// now or before).
fn attach_image(probe: &mut MemleakProbe<'_>, bins: &allocator::CommandBinaries) -> Result<usize> {
    let mut paths: Vec<PathBuf> = bins.executable.iter().cloned().collect();
    paths.extend(bins.libraries.iter().cloned());
    if bins.dynamic {
        paths.extend(allocator::own_libc());
    }
    let mut allocators = 0;
    for path in paths {
        if try_attach_file(probe, &path)?.is_some() {
            allocators += 1;
        }
    }
    Ok(allocators)
}

/// Probes the allocator entry points of the file at `path`: `None` when
/// it is no allocator, else whether the probes are new.
fn try_attach_file(probe: &mut MemleakProbe<'_>, path: &Path) -> Result<Option<bool>> {
    let Ok(file) = crate::safe_fs::open_own_file(path) else {
        return Ok(None);
    };
    let key = match file.metadata() {
        Ok(m) => FileKey::of_metadata(&m),
        Err(_) => return Ok(None),
    };
    let eps = allocator::entry_points_of(&file).unwrap_or_default();
    if eps.is_empty() {
        return Ok(None);
    }
    use std::os::fd::AsRawFd;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let fresh = probe.attach_allocator(-1, key, &fd_path, &eps)?;
    if fresh {
        log::info!(
            "probing {} allocator entry points in {}",
            eps.len(),
            path.display()
        );
    }
    Ok(Some(fresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(tgid: u32, size: u64, ts: u64, stack_id: u64) -> Outstanding {
        Outstanding {
            tgid,
            addr: ts,
            size,
            ts,
            stack_id,
        }
    }

    #[test]
    fn aggregates_by_stack_and_applies_min_age_to_live_processes() {
        let me = std::process::id();
        let gone = u32::MAX - 5;
        let all = [
            o(me, 100, 1_000, 1),
            o(me, 50, 2_000, 1),
            o(me, 7, 9_500, 2),   // young: left out while we run
            o(gone, 9, 9_900, 3), // young but its process exited: kept
        ];
        let got = aggregate(&all, 10_000, 1_000, 0, false);
        assert_eq!(got, vec![(1, (150, 2)), (3, (9, 1))]);
        let got = aggregate(&all, 10_000, 0, 0, false);
        assert_eq!(got.len(), 3);
    }
}
