//! The target filter on the BPF side (bpf/targets.h), the same for every
//! probe: its per-run settings, the `targets` map, and the tracepoints that
//! follow new processes and forget exited ones.

use libbpf_rs::{Link, MapCore, MapFlags, ProgramMut};

use super::profile_skel::types::filter_mode;
use super::setup::ProbeError;
use crate::target::{Filter, ThreadFilter};

/// The `const volatile` settings of bpf/targets.h for a filter.
pub(crate) struct FilterSettings {
    pub mode: u32,
    pub follow_children: bool,
    /// flameprobe's own process, never recorded.
    pub self_tgid: u32,
    pub filter_threads: bool,
}

impl FilterSettings {
    pub fn of(filter: &Filter, threads: &ThreadFilter) -> Self {
        FilterSettings {
            mode: match filter {
                Filter::All => filter_mode::FILTER_ALL.0,
                Filter::Pids { .. } => filter_mode::FILTER_PIDS.0,
            },
            follow_children: filter.follows_children(),
            self_tgid: std::process::id(),
            filter_threads: threads.is_some(),
        }
    }
}

/// Sets a skeleton's target-filter rodata (every skeleton has its own
/// generated rodata type, with the same fields from bpf/targets.h).
macro_rules! set_filter_rodata {
    ($rodata:expr, $filter:expr, $threads:expr) => {{
        let f = $crate::probe::targets::FilterSettings::of($filter, $threads);
        $rodata.filter_mode = f.mode;
        $rodata.follow_children = f.follow_children;
        $rodata.self_tgid = f.self_tgid;
        $rodata.filter_threads = f.filter_threads;
    }};
}
pub(crate) use set_filter_rodata;

/// Whether the fork/exit tracking programs are needed (they are not
/// loaded for the whole machine).
pub(crate) fn needs_tracking(filter: &Filter) -> bool {
    !matches!(filter, Filter::All)
}

/// After loading: puts the named processes into the `targets` map and
/// attaches the tracking tracepoints. The links detach on drop.
pub(crate) fn start(
    maps: &TargetMaps<'_>,
    on_fork: &ProgramMut<'_>,
    on_exit: &ProgramMut<'_>,
    filter: &Filter,
    threads: &ThreadFilter,
) -> Result<Vec<Link>, ProbeError> {
    for &pid in filter.pids() {
        add_target(maps.targets, pid)?;
    }
    for &tid in threads.iter().flatten() {
        maps.add_thread(tid)?;
    }
    if !needs_tracking(filter) {
        return Ok(Vec::new());
    }
    let mut links = vec![on_exit
        .attach()
        .map_err(|e| ProbeError::attach("sched_process_exit tracepoint", &e))?];
    if filter.follows_children() {
        links.push(
            on_fork
                .attach()
                .map_err(|e| ProbeError::attach("sched_process_fork tracepoint", &e))?,
        );
    }
    Ok(links)
}

/// Adds a process to a program's `targets` map.
pub(crate) fn add_target(targets: &dyn MapCore, pid: u32) -> Result<(), ProbeError> {
    targets
        .update(&pid.to_ne_bytes(), &[1u8], MapFlags::ANY)
        .map_err(|e| ProbeError::attach("target map", e))
}

/// The target maps of one loaded program, for adding what appears during
/// the recording (threads matching --thread).
pub struct TargetMaps<'a> {
    targets: &'a dyn MapCore,
    threads: &'a dyn MapCore,
}

impl<'a> TargetMaps<'a> {
    pub(crate) fn new(targets: &'a dyn MapCore, threads: &'a dyn MapCore) -> Self {
        TargetMaps { targets, threads }
    }

    /// Records thread `tid` too (with --tid/--thread).
    pub fn add_thread(&self, tid: u32) -> Result<(), ProbeError> {
        self.threads
            .update(&tid.to_ne_bytes(), &[1u8], MapFlags::ANY)
            .map_err(|e| ProbeError::attach("thread map", e))
    }

    /// The processes in the target map (named targets and the children
    /// followed), empty for the whole machine.
    pub fn pids(&self) -> Vec<u32> {
        self.targets
            .keys()
            .filter_map(|k| k.get(..4).and_then(|b| b.try_into().ok()))
            .map(u32::from_ne_bytes)
            .collect()
    }
}
