//! The target filter on the BPF side (bpf/targets.h), the same for every
//! probe: its per-run settings, the `targets`, `target_cgroups` and
//! `target_threads` maps, and the tracepoints that follow new processes
//! and forget exited ones.

use libbpf_rs::{Link, MapCore, MapFlags, ProgramMut};

use super::profile_skel::types::filter_mode;
use super::setup::ProbeError;
use crate::target::{Filter, ThreadFilter, MAX_CGROUP_LEVELS};

/// The `const volatile` settings of bpf/targets.h for a filter.
pub(crate) struct FilterSettings {
    pub mode: u32,
    pub follow_children: bool,
    /// flameprobe's own process, never recorded.
    pub self_tgid: u32,
    /// The distinct depths of the target cgroups (`cgroup_levels`), the
    /// first `cgroup_level_count` entries used.
    pub cgroup_levels: [u32; MAX_CGROUP_LEVELS],
    pub cgroup_level_count: u32,
    /// Only the threads in `target_threads` (--tid, --thread).
    pub filter_threads: bool,
}

impl FilterSettings {
    pub fn of(filter: &Filter, threads: &ThreadFilter) -> Self {
        let mut cgroup_levels = [0; MAX_CGROUP_LEVELS];
        let mut cgroup_level_count = 0;
        if let Filter::Cgroups(cgroups) = filter {
            for (slot, level) in cgroup_levels.iter_mut().zip(Filter::levels(cgroups)) {
                *slot = level;
                cgroup_level_count += 1;
            }
        }
        FilterSettings {
            mode: match filter {
                Filter::All => filter_mode::FILTER_ALL.0,
                Filter::Pids { .. } => filter_mode::FILTER_PIDS.0,
                Filter::Cgroups(_) => filter_mode::FILTER_CGROUPS.0,
            },
            follow_children: filter.follows_children(),
            self_tgid: std::process::id(),
            cgroup_levels,
            cgroup_level_count,
            filter_threads: threads.is_some(),
        }
    }
}

// The user-space limit is the one the BPF filter was built with.
const _: () =
    assert!(super::profile_skel::types::limits::MAX_CGROUP_LEVELS.0 as usize == MAX_CGROUP_LEVELS);

/// Sets a skeleton's target-filter rodata (every skeleton has its own
/// generated rodata type, with the same fields from bpf/targets.h).
macro_rules! set_filter_rodata {
    ($rodata:expr, $filter:expr, $threads:expr) => {{
        let f = $crate::probe::targets::FilterSettings::of($filter, $threads);
        $rodata.filter_mode = f.mode;
        $rodata.follow_children = f.follow_children;
        $rodata.self_tgid = f.self_tgid;
        $rodata.cgroup_levels = f.cgroup_levels;
        $rodata.cgroup_level_count = f.cgroup_level_count;
        $rodata.filter_threads = f.filter_threads;
    }};
}
pub(crate) use set_filter_rodata;

/// Loads targets.h's fork and exit tracking programs of an open skeleton
/// (`$progs`) only where the filter needs them.
macro_rules! autoload_target_tracking {
    ($progs:expr, $filter:expr) => {{
        let filter: &$crate::target::Filter = $filter;
        $progs.on_fork.set_autoload(filter.follows_children());
        $progs
            .on_exit
            .set_autoload($crate::probe::targets::needs_tracking(filter));
    }};
}
pub(crate) use autoload_target_tracking;

/// The [`TargetMaps`] of a loaded skeleton's maps (`$maps`): every
/// program includes targets.h, so every skeleton has them.
macro_rules! target_maps_of {
    ($maps:expr) => {
        $crate::probe::targets::TargetMaps::new(
            &$maps.targets,
            &$maps.target_cgroups,
            &$maps.target_threads,
        )
    };
}
pub(crate) use target_maps_of;

/// Whether the fork/exit tracking programs are needed (only to keep the
/// `targets` map of processes).
pub(crate) fn needs_tracking(filter: &Filter) -> bool {
    matches!(filter, Filter::Pids { .. })
}

/// A loaded program's target-filter maps.
pub struct TargetMaps<'a> {
    targets: &'a dyn MapCore,
    cgroups: &'a dyn MapCore,
    threads: &'a dyn MapCore,
}

impl<'a> TargetMaps<'a> {
    pub(crate) fn new(
        targets: &'a dyn MapCore,
        cgroups: &'a dyn MapCore,
        threads: &'a dyn MapCore,
    ) -> Self {
        TargetMaps {
            targets,
            cgroups,
            threads,
        }
    }

    /// Records process `pid` too (a process that joined a container
    /// followed by pid).
    pub fn add_process(&self, pid: u32) -> Result<(), ProbeError> {
        add(self.targets, &pid.to_ne_bytes(), "target map")
    }

    /// Records the tasks in cgroup `id` too (a container that joined a
    /// recorded pod), when the filter is by cgroup and `id`'s depth is one
    /// of the filter's levels.
    pub fn add_cgroup(&self, id: u64) -> Result<(), ProbeError> {
        add(self.cgroups, &id.to_ne_bytes(), "target cgroup map")
    }

    /// Records thread `tid` too (with --tid/--thread).
    pub fn add_thread(&self, tid: u32) -> Result<(), ProbeError> {
        add(self.threads, &tid.to_ne_bytes(), "thread map")
    }

    /// The processes in the target map (named targets and the children
    /// followed), empty unless the filter is by process.
    pub fn pids(&self) -> Vec<u32> {
        self.targets
            .keys()
            .filter_map(|k| k.get(..4).and_then(|b| b.try_into().ok()))
            .map(u32::from_ne_bytes)
            .collect()
    }
}

/// After loading: puts the named processes into the `targets` map, the
/// cgroups into `target_cgroups` and the threads into `target_threads`,
/// and attaches the tracking tracepoints. The links detach on drop.
pub(crate) fn start(
    maps: &TargetMaps<'_>,
    on_fork: &ProgramMut<'_>,
    on_exit: &ProgramMut<'_>,
    filter: &Filter,
    threads: &ThreadFilter,
) -> Result<Vec<Link>, ProbeError> {
    for &pid in filter.pids() {
        maps.add_process(pid)?;
    }
    if let Filter::Cgroups(cgroups) = filter {
        for c in cgroups {
            maps.add_cgroup(c.id)?;
        }
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

fn add(map: &dyn MapCore, key: &[u8], what: &str) -> Result<(), ProbeError> {
    map.update(key, &[1u8], MapFlags::ANY)
        .map_err(|e| ProbeError::attach(what, e))
}
