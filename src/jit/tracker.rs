//! The recording's JIT bookkeeping: which profiled processes ran code in
//! anonymous executable memory (JIT code), their perf maps, the HotSpot
//! attach at the end, and why frames stayed unnamed.
//!
//! [`JitTracker`] lives in the `StackCollector`: a process is tracked at its
//! first sample with a frame in anonymous executable memory (then, while it
//! is alive, its runtime is detected and its [`PerfMapSource`] and a pidfd
//! taken). At every poll of the recording, processes whose pidfd says they
//! exited get their map read ([`JitTracker::poll_exits`]). After sampling
//! stopped, [`JitTracker::finish`] asks each live HotSpot JVM for its map
//! (once, unless `--no-jit-attach`) and reads the maps of the live
//! processes, in parallel; [`JitMaps::install`] hands them to the
//! `Symbolizer`, and [`JitMaps::warnings`] and [`JitMaps::quality_lines`]
//! say what went wrong, for the summary.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::hotspot::{self, AttachError, AttachOptions};
use super::perfmap::{MapCache, PerfMap, PerfMapError, PerfMapSource};
use super::runtime::Runtime;
use crate::process::ProcessInfo;
use crate::profile::Profile;
use crate::symbolize::Symbolizer;

/// Most processes whose maps are read (and JVMs attached to) at once at
/// the end of a recording.
const PARALLEL_READS: usize = 16;

/// How long all the runtime work at the end of a recording may take
/// together (JVM attaches and perf-map reads, in parallel), from when
/// sampling stopped: a process that only looks like a JVM, or one that
/// hangs, cannot hold the recording longer.
pub const END_BUDGET: Duration = Duration::from_secs(1);

/// What to do at the end of a recording.
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Ask live HotSpot JVMs to write their perf maps (not
    /// `--no-jit-attach`).
    pub attach: bool,
    pub attach_timeouts: AttachOptions,
    /// The time all of it may take ([`END_BUDGET`]).
    pub budget: Duration,
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            attach: false,
            attach_timeouts: AttachOptions::default(),
            budget: END_BUDGET,
        }
    }
}

/// Processes that ran JIT code during the recording.
#[derive(Debug, Default)]
pub struct JitTracker {
    procs: HashMap<u32, Tracked>,
    /// The perf maps read: once per file, within the recording's budget.
    maps: MapCache,
}

#[derive(Debug)]
struct Tracked {
    /// The process's name (comm), for messages.
    name: String,
    runtime: Runtime,
    source: Result<PerfMapSource, PerfMapError>,
    /// Readable once the process has exited; `None` after it did, or when
    /// it could not be opened (then its exit is not noticed during the
    /// recording, and its liveness is checked by pid at the end).
    pidfd: Option<OwnedFd>,
    /// Its exit was noticed during the recording.
    exited: bool,
    /// The map read when the process exited during the recording.
    at_exit: Option<Result<Arc<PerfMap>, PerfMapError>>,
    /// HotSpot: whether it keeps frame pointers in compiled code.
    preserves_fp: Option<bool>,
}

impl JitTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_tracked(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Starts tracking `pid`, whose snapshot is `info`, at its first
    /// sample in JIT code (the process is alive: it was just sampled).
    pub fn track(&mut self, pid: u32, info: &ProcessInfo) {
        if self.procs.contains_key(&pid) {
            return;
        }
        let maps: Vec<_> = info.mappings.iter().map(|m| m.entry.clone()).collect();
        let runtime = Runtime::detect(pid, &maps);
        let preserves_fp = match runtime {
            Runtime::HotSpot(_) => hotspot::preserves_frame_pointer(pid),
            _ => None,
        };
        let pidfd = pidfd_open(pid)
            .map_err(|e| log::debug!("pid {pid}: pidfd_open failed ({e}); its exit goes unnoticed"))
            .ok();
        log::debug!("pid {pid} ({}) runs JIT code: {runtime:?}", info.name);
        self.procs.insert(
            pid,
            Tracked {
                name: info.name.clone(),
                runtime,
                source: PerfMapSource::open(pid),
                pidfd,
                exited: false,
                at_exit: None,
                preserves_fp,
            },
        );
    }

    /// Reads the maps of tracked processes that exited since the last call
    /// (cheap when none did: one `poll` over their pidfds).
    pub fn poll_exits(&mut self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let live: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, t)| t.pidfd.is_some())
            .map(|(&pid, _)| pid)
            .collect();
        if live.is_empty() {
            return;
        }
        let exited: Vec<u32> = {
            let mut fds: Vec<PollFd<'_>> = live
                .iter()
                .filter_map(|pid| self.procs[pid].pidfd.as_ref())
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(0) => return,
                Ok(_) => live
                    .iter()
                    .zip(&fds)
                    .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(&pid, _)| pid)
                    .collect(),
                Err(e) => {
                    log::debug!("polling pidfds failed: {e}");
                    return;
                }
            }
        };
        for pid in exited {
            let Some(t) = self.procs.get_mut(&pid) else {
                continue;
            };
            t.pidfd = None;
            t.exited = true;
            if let Ok(source) = &t.source {
                let read = source.read_cached(&self.maps, None);
                match &read {
                    Ok(map) => log::info!(
                        "pid {pid} exited; read its perf map ({} entries)",
                        map.stats().entries
                    ),
                    Err(e) => log::info!("pid {pid} exited; {e}"),
                }
                t.at_exit = Some(read);
            }
        }
    }

    /// After sampling stopped: asks each live HotSpot JVM for its perf map
    /// (`opts.attach`), then reads the map of every live process; a
    /// process that exited keeps the map read at its exit (a read now
    /// could find another process's map under a reused pid). All of it,
    /// [`PARALLEL_READS`] processes at a time, ends within `opts.budget`:
    /// an attach or read still running then gives up, and processes not
    /// started by then are skipped (said in [`JitMaps::warnings`]).
    pub fn finish(mut self, opts: &JitOptions) -> JitMaps {
        let started = Instant::now();
        let deadline = started + opts.budget;
        self.poll_exits();
        let mut todo: Vec<(u32, Tracked)> = self.procs.into_iter().collect();
        todo.sort_by_key(|(pid, _)| *pid);
        let workers = todo.len().min(PARALLEL_READS);
        let todo = Mutex::new(VecDeque::from(todo));
        let done: Mutex<BTreeMap<u32, ProcessJit>> = Mutex::new(BTreeMap::new());
        let mut attach = opts.attach_timeouts.clone();
        attach.deadline = Some(deadline);
        let end = End {
            attach: opts.attach,
            timeouts: &attach,
            deadline: Some(deadline),
            maps: &self.maps,
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| loop {
                        let next = todo.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                        let Some((pid, t)) = next else { break };
                        let p = if Instant::now() >= deadline {
                            skip(pid, t, &end)
                        } else {
                            conclude(pid, t, &end)
                        };
                        done.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(pid, p);
                    })
                })
                .collect();
            for h in handles {
                if h.join().is_err() {
                    log::warn!("reading a perf map failed unexpectedly");
                }
            }
        });
        let procs = done.into_inner().unwrap_or_else(|e| e.into_inner());
        let stats = self.maps.stats();
        log::info!(
            "perf maps of {} processes in {} ms ({} JVMs asked): {} files read ({} MiB), {} \
             reads shared by dev/inode, {} skipped",
            procs.len(),
            started.elapsed().as_millis(),
            procs.values().filter(|p| p.attach.is_some()).count(),
            stats.files,
            stats.bytes >> 20,
            stats.shared,
            stats.skipped
        );
        JitMaps {
            procs,
            budget: opts.budget,
        }
    }
}

impl JitTracker {
    /// Continuous mode, at the end of a window: the maps as they are now,
    /// without asking any JVM (that is a safepoint: only at the end of the
    /// recording). A process whose exit was noticed gives its map read at
    /// exit and is no longer tracked, so memory stays bounded however many
    /// processes come and go.
    pub fn window(&mut self) -> JitMaps {
        self.poll_exits();
        // Each window's maps are read anew, within a budget of their own.
        let maps = MapCache::default();
        let no_attach = End {
            attach: false,
            timeouts: &AttachOptions::default(),
            deadline: None,
            maps: &maps,
        };
        let gone: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, t)| t.exited)
            .map(|(&pid, _)| pid)
            .collect();
        let mut procs = BTreeMap::new();
        for pid in gone {
            if let Some(t) = self.procs.remove(&pid) {
                procs.insert(pid, conclude(pid, t, &no_attach));
            }
        }
        for (&pid, t) in &self.procs {
            let Ok(source) = &t.source else { continue };
            let Ok(map) = source.read_cached(&maps, None) else {
                continue;
            };
            procs.insert(
                pid,
                ProcessJit {
                    name: t.name.clone(),
                    runtime: t.runtime.clone(),
                    map: MapState::Read(map),
                    attach: None,
                    not_asked: false,
                    preserves_fp: t.preserves_fp,
                },
            );
        }
        JitMaps {
            procs,
            budget: END_BUDGET,
        }
    }
}

/// What the end of a recording does for each process.
struct End<'a> {
    attach: bool,
    timeouts: &'a AttachOptions,
    deadline: Option<Instant>,
    maps: &'a MapCache,
}

/// Whether `pid` (tracked as `t`) is still running.
fn is_alive(pid: u32, t: &Tracked) -> bool {
    match &t.pidfd {
        Some(_) => true,
        None => !t.exited && crate::proc::process_alive(pid),
    }
}

/// One tracked process at the end: attach (a live JVM), then read.
fn conclude(pid: u32, t: Tracked, end: &End<'_>) -> ProcessJit {
    let alive = is_alive(pid, &t);
    let source = match t.source {
        Ok(source) => source,
        Err(e) => {
            return ProcessJit {
                name: t.name,
                runtime: t.runtime,
                map: MapState::Failed(e),
                attach: None,
                not_asked: false,
                preserves_fp: t.preserves_fp,
            }
        }
    };
    let attach = (alive && end.attach && matches!(t.runtime, Runtime::HotSpot(_))).then(|| {
        let result = hotspot::write_perf_map(pid, end.timeouts);
        match &result {
            Ok(()) => log::info!("JVM {pid} wrote its perf map"),
            Err(e) => log::info!("JVM {pid}: {e}"),
        }
        result
    });
    let read = match t.at_exit {
        Some(read) => read,
        None => source.read_cached(end.maps, end.deadline),
    };
    ProcessJit {
        name: t.name,
        runtime: t.runtime,
        map: match read {
            Ok(map) => MapState::Read(map),
            Err(e) => MapState::Failed(e),
        },
        attach,
        not_asked: false,
        preserves_fp: t.preserves_fp,
    }
}

/// A tracked process whose turn came after the deadline: only what was
/// read at its exit; a JVM is not asked.
fn skip(pid: u32, t: Tracked, end: &End<'_>) -> ProcessJit {
    let not_asked = end.attach && is_alive(pid, &t) && matches!(t.runtime, Runtime::HotSpot(_));
    let map = match (t.at_exit, t.source) {
        (Some(Ok(map)), _) => MapState::Read(map),
        (Some(Err(e)), _) | (None, Err(e)) => MapState::Failed(e),
        (None, Ok(source)) => MapState::Failed(PerfMapError::Skipped {
            pid,
            path: source.display_path(),
            reason: "the time for the end of the recording ran out".into(),
        }),
    };
    ProcessJit {
        name: t.name,
        runtime: t.runtime,
        map,
        attach: None,
        not_asked,
        preserves_fp: t.preserves_fp,
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A tracked process's perf map at the end of the recording.
#[derive(Debug)]
enum MapState {
    Read(Arc<PerfMap>),
    /// Handed to the symbolizer.
    Installed,
    Failed(PerfMapError),
}

/// What the end of the recording found for one process.
#[derive(Debug)]
struct ProcessJit {
    name: String,
    runtime: Runtime,
    map: MapState,
    /// The HotSpot attach, when one was made.
    attach: Option<Result<(), AttachError>>,
    /// A live JVM that was not asked: the time ran out before its turn.
    not_asked: bool,
    /// HotSpot: started with `-XX:+PreserveFramePointer`.
    preserves_fp: Option<bool>,
}

impl ProcessJit {
    /// Why frames of this process in JIT code have no name.
    fn unnamed_reason(&self) -> String {
        let hint = self.runtime.perf_map_hint();
        match (&self.map, &self.attach) {
            (MapState::Read(_) | MapState::Installed, _) => {
                "its perf map does not name that code (generated after the map was written, \
                 or freed before)"
                    .to_string()
            }
            (MapState::Failed(PerfMapError::Missing { .. }), _) if self.not_asked => {
                "no perf map: the JVM was not asked, the time ran out (see the warning above)"
                    .to_string()
            }
            (MapState::Failed(PerfMapError::Missing { .. }), Some(Err(_))) => {
                "no perf map: the JVM did not write one (see the warning above)".to_string()
            }
            (MapState::Failed(PerfMapError::Missing { path, .. }), _) => match hint {
                Some(hint) => format!("no perf map ({path}); {hint}"),
                None => format!("no perf map ({path})"),
            },
            (MapState::Failed(e), _) => e.to_string(),
        }
    }
}

/// The perf maps found at the end of a recording, per process.
#[derive(Debug, Default)]
pub struct JitMaps {
    procs: BTreeMap<u32, ProcessJit>,
    /// The time the end of the recording had ([`JitOptions::budget`]).
    budget: Duration,
}

impl JitMaps {
    /// Hands every map read to the symbolizer, with its runtime's
    /// language.
    pub fn install(&mut self, symbolizer: &mut Symbolizer) {
        for (&pid, p) in &mut self.procs {
            if !matches!(p.map, MapState::Read(_)) {
                continue;
            }
            if let MapState::Read(map) = std::mem::replace(&mut p.map, MapState::Installed) {
                symbolizer.add_perf_map(pid, map, p.runtime.language());
            }
        }
    }

    /// One warning line per JVM that did not write its perf map on
    /// request (the error names the pid and what to do), except those that
    /// did not answer in time or were not asked: one line names them all;
    /// and one line for perf maps not read (budget, time).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut silent = Vec::new();
        for (&pid, p) in &self.procs {
            match &p.attach {
                Some(Err(e)) if e.is_no_answer() => silent.push(pid),
                Some(Err(e)) => out.push(format!("warning: {e}; its JIT frames stay [anon]")),
                _ if p.not_asked => silent.push(pid),
                _ => {}
            }
        }
        if !silent.is_empty() {
            out.push(format!(
                "warning: {} JVMs did not answer the perf-map request within {:.1} s after \
                 sampling stopped, so their JIT frames stay [anon] (hung, or not JVMs): pids {}",
                silent.len(),
                self.budget.as_secs_f64(),
                pid_list(&silent)
            ));
        }
        let skipped: Vec<(u32, &str)> = self
            .procs
            .iter()
            .filter_map(|(&pid, p)| match &p.map {
                MapState::Failed(PerfMapError::Skipped { reason, .. }) => {
                    Some((pid, reason.as_str()))
                }
                _ => None,
            })
            .collect();
        if !skipped.is_empty() {
            let mut reasons: Vec<&str> = skipped.iter().map(|(_, r)| *r).collect();
            reasons.sort_unstable();
            reasons.dedup();
            let pids: Vec<u32> = skipped.iter().map(|(pid, _)| *pid).collect();
            out.push(format!(
                "warning: the perf maps of {} processes were not read ({}), so their JIT frames \
                 stay [anon]: pids {}",
                pids.len(),
                reasons.join("; "),
                pid_list(&pids)
            ));
        }
        out
    }

    /// Stack-quality lines: per process, the share of its samples with
    /// unnamed JIT frames and why; per JVM without
    /// `-XX:+PreserveFramePointer`, that its stacks are cut short.
    pub fn quality_lines(&self, profile: &Profile) -> Vec<String> {
        let shares = crate::quality::unnamed_jit_by_pid(profile);
        let mut out = Vec::new();
        for (&pid, p) in &self.procs {
            if let Some(&(unnamed, total)) = shares.get(&pid) {
                if unnamed > 0 && total > 0 {
                    out.push(format!(
                        "unnamed JIT frames in {:.1}% of the samples of pid {pid} ({}): {}",
                        100.0 * unnamed as f64 / total as f64,
                        p.name,
                        p.unnamed_reason()
                    ));
                }
            }
            if p.preserves_fp == Some(false) {
                out.push(format!(
                    "JVM {pid} ({}) {}; {}",
                    p.name,
                    super::hotspot::WITHOUT_FRAME_POINTER,
                    super::hotspot::FRAME_POINTER_FIX
                ));
            }
        }
        out
    }
}

/// Pids for a message: all of them up to 20, then how many more.
fn pid_list(pids: &[u32]) -> String {
    let shown: Vec<String> = pids.iter().take(20).map(u32::to_string).collect();
    match pids.len().saturating_sub(20) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessTable;
    use crate::profile::{units, FrameKind, Labels, Meta, ValueType};

    /// A profile of `pid`: 3 samples with an unnamed JIT frame, 1 without.
    fn profile_of(pid: u32) -> Profile {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let main = p.intern_named(FrameKind::User, "main");
        let anon = p.intern_named(FrameKind::User, "[anon]+0x10");
        let labels = Labels {
            pid: Some(pid),
            ..Labels::default()
        };
        p.add(labels.clone(), vec![main, anon], &[3]);
        p.add(labels, vec![main], &[1]);
        p
    }

    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn reads_a_live_process_map_at_the_end_and_explains_what_is_missing() {
        let _own_map = crate::jit::OWN_PERF_MAP
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let path = format!("/tmp/perf-{pid}.map");
        let _cleanup = Remove(path.clone());
        let _ = std::fs::remove_file(&path);
        let mut table = ProcessTable::new();
        let info = table.get(pid);
        let name = info.name.clone();

        let mut tracker = JitTracker::new();
        tracker.track(pid, info);
        assert!(tracker.is_tracked(pid));
        tracker.poll_exits();
        let maps = tracker.finish(&JitOptions::default());
        assert!(maps.warnings().is_empty());
        assert_eq!(
            maps.quality_lines(&profile_of(pid)),
            [format!(
                "unnamed JIT frames in 75.0% of the samples of pid {pid} ({name}): no perf map \
                 (/proc/{pid}/root/tmp/perf-{pid}.map)"
            )]
        );

        std::fs::write(&path, "1000 100 JS:*fib /app/a.js:3:7\n").unwrap();
        let mut tracker = JitTracker::new();
        tracker.track(pid, table.get(pid));
        let mut maps = tracker.finish(&JitOptions::default());
        let mut symbolizer = Symbolizer::new();
        maps.install(&mut symbolizer);
        symbolizer.prepare_jit(pid, &[0x1010, 0x2000]);
        let line = symbolizer.jit(pid, 0x1010).expect("named from the map");
        assert_eq!(line.function, "fib /app/a.js:3");
        assert_eq!(symbolizer.jit(pid, 0x2000), None);
        let lines = maps.quality_lines(&profile_of(pid));
        assert!(lines[0].contains("does not name that code"), "{lines:?}");
    }

    #[test]
    fn reads_the_map_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id();
        let path = format!("/tmp/perf-{pid}.map");
        let _cleanup = Remove(path.clone());
        std::fs::write(&path, "0x1000 0x100 long Main.hot(int)\n").unwrap();
        let mut table = ProcessTable::new();
        let mut tracker = JitTracker::new();
        tracker.track(pid, table.get(pid));
        tracker.poll_exits();
        assert!(tracker.procs[&pid].at_exit.is_none(), "still running");
        child.wait().unwrap();
        tracker.poll_exits();
        assert!(tracker.procs[&pid].exited);
        // Gone by the end: the map read at the exit is the one used.
        std::fs::remove_file(&path).unwrap();
        let mut maps = tracker.finish(&JitOptions::default());
        let mut symbolizer = Symbolizer::new();
        maps.install(&mut symbolizer);
        symbolizer.prepare_jit(pid, &[0x1080]);
        let line = symbolizer
            .jit(pid, 0x1080)
            .expect("named from the map read at exit");
        // An unknown runtime: the name's shape says Java.
        assert_eq!(line.function, "Main.hot");
        assert_eq!(line.system_name.as_deref(), Some("long Main.hot(int)"));
    }
}
