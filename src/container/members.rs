//! The processes of the containers a recording targets, as they come and
//! go: which processes joined since the last look (`podman exec`, a worker
//! respawned) and which containers stopped.
//!
//! A container with its own cgroup in the unified hierarchy
//! ([`Container::cgroup_id`]) is read there: the `cgroup.procs` of its
//! cgroup and of every cgroup below it, a few small kernel files, cheap
//! enough for every poll. Any other container (pure cgroup v1, or one left
//! in a shared v2 cgroup) is found by reading every process's
//! `/proc/PID/cgroup`, at most once per [`PROC_SCAN_INTERVAL`].
//!
//! A container has stopped once it has no process left (its cgroup is
//! empty or removed). That is final: a container started again gets a new
//! id and cgroup. With `--pod`, such a container (and any other created in
//! the pod) is a new member: the pods are followed
//! ([`ContainerWatch::follow_pods`]) by reading `/proc/*/cgroup` at most
//! once per [`PROC_SCAN_INTERVAL`], and a container that appears in one
//! is reported ([`Changes::new_containers`]) so the recording adds its
//! cgroup to the in-kernel filter.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pods::same_pod;
use super::{cgroup, Container, ContainerCache, Pod};

/// Shortest time between two scans of `/proc` for containers without a
/// cgroup of their own.
pub const PROC_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Deepest cgroup nesting read below a container's cgroup.
const MAX_DEPTH: usize = 16;
/// Most cgroups read below (and including) a container's cgroup.
const MAX_CGROUPS: usize = 4096;

/// The members of the recorded containers.
pub struct ContainerWatch {
    watched: Vec<Watched>,
    last_scan: Option<Instant>,
    /// Pods whose new containers join the watch.
    pods: Vec<Pod>,
    /// Names the containers found in scans (when following pods).
    cache: Option<ContainerCache>,
}

struct Watched {
    container: Container,
    /// Its cgroup directory in the unified hierarchy, when it has its own.
    dir: Option<PathBuf>,
    /// Its processes at the last look.
    pids: BTreeSet<u32>,
    stopped: bool,
}

/// What changed since the last look.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Processes that joined a container, ascending.
    pub joined: Vec<u32>,
    /// Names of the containers that stopped.
    pub stopped: Vec<String>,
    /// Containers that appeared in a followed pod (their processes are in
    /// `joined` too).
    pub new_containers: Vec<Container>,
}

impl Watched {
    fn of(container: &Container, unified: Option<&Path>) -> Watched {
        Watched {
            dir: container
                .cgroup_id
                .and(unified)
                .map(|m| m.join(container.cgroup_path.trim_start_matches('/'))),
            pids: container.pids.iter().copied().collect(),
            container: container.clone(),
            stopped: false,
        }
    }
}

impl ContainerWatch {
    /// Watches `containers`; the processes they had when listed are their
    /// first members (not reported as joined).
    pub fn new(containers: &[Container]) -> ContainerWatch {
        let mount = cgroup::unified_mount().ok();
        let watched = containers
            .iter()
            .map(|c| Watched::of(c, mount.as_deref()))
            .collect();
        ContainerWatch {
            watched,
            last_scan: Some(Instant::now()),
            pods: Vec::new(),
            cache: None,
        }
    }

    /// Also watches the containers created in `pods` from now on.
    pub fn follow_pods(mut self, pods: Vec<Pod>) -> ContainerWatch {
        if !pods.is_empty() {
            self.cache = Some(ContainerCache::new());
        }
        self.pods = pods;
        self
    }

    /// The containers of a scan that are new in a followed pod, now
    /// watched.
    fn add_new_pod_members(&mut self, by_id: &super::ProcessesByContainer) -> Vec<Container> {
        let Some(cache) = self.cache.as_mut() else {
            return Vec::new();
        };
        let known: HashSet<String> = self
            .watched
            .iter()
            .map(|w| w.container.id.clone())
            .collect();
        let pods = &self.pods;
        let new: Vec<Container> = super::containers_in(by_id, cache, |id| !known.contains(id))
            .into_iter()
            .filter(|c| {
                c.pod
                    .as_ref()
                    .is_some_and(|p| pods.iter().any(|q| same_pod(p, q)))
            })
            .collect();
        let mount = cgroup::unified_mount().ok();
        self.watched
            .extend(new.iter().map(|c| Watched::of(c, mount.as_deref())));
        new
    }

    /// Looks again: the processes that joined and the containers that
    /// stopped since the last look.
    pub fn update(&mut self) -> Changes {
        let scan_due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= PROC_SCAN_INTERVAL);
        let needs_scan =
            !self.pods.is_empty() || self.watched.iter().any(|w| !w.stopped && w.dir.is_none());
        let scanned = (needs_scan && scan_due).then(|| {
            self.last_scan = Some(Instant::now());
            super::processes_by_container()
        });
        let mut changes = Changes::default();
        if let Some(by_id) = &scanned {
            for c in self.add_new_pod_members(by_id) {
                changes.joined.extend(&c.pids);
                changes.new_containers.push(c);
            }
        }
        let first_new = self.watched.len() - changes.new_containers.len();
        for w in self.watched[..first_new].iter_mut().filter(|w| !w.stopped) {
            let now: BTreeSet<u32> = match (&w.dir, &scanned) {
                (Some(dir), _) => cgroup_tree_pids(dir).unwrap_or_else(|e| {
                    if e.kind() != io::ErrorKind::NotFound {
                        log::debug!("container {}: {}: {e}", w.container.name, dir.display());
                    }
                    BTreeSet::new()
                }),
                (None, Some(by_id)) => by_id
                    .get(&w.container.id)
                    .map(|(_, pids)| pids.iter().copied().collect())
                    .unwrap_or_default(),
                (None, None) => continue, // not scanned this time
            };
            changes.joined.extend(now.difference(&w.pids));
            if now.is_empty() {
                w.stopped = true;
                changes.stopped.push(w.container.name.clone());
            }
            w.pids = now;
        }
        changes.joined.sort_unstable();
        changes.joined.dedup();
        changes
    }

    /// Every process in the containers at the last look, ascending.
    pub fn pids(&self) -> Vec<u32> {
        let all: BTreeSet<u32> = self
            .watched
            .iter()
            .flat_map(|w| w.pids.iter())
            .copied()
            .collect();
        all.into_iter().collect()
    }

    /// Whether every container has stopped.
    pub fn all_stopped(&self) -> bool {
        self.watched.iter().all(|w| w.stopped)
    }
}

/// The processes in cgroup `dir` and in every cgroup below it (a cgroup v2
/// directory: one `cgroup.procs` per cgroup, sub-cgroups as directories).
/// An error when `dir` itself cannot be read (removed: `NotFound`).
pub fn cgroup_tree_pids(dir: &Path) -> io::Result<BTreeSet<u32>> {
    let mut pids = BTreeSet::new();
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0;
    while let Some((cg, depth)) = pending.pop() {
        seen += 1;
        match std::fs::read_to_string(cg.join("cgroup.procs")) {
            Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
            Err(e) if cg == dir => return Err(e),
            Err(_) => continue, // a sub-cgroup removed meanwhile
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&cg) else {
            continue;
        };
        for entry in entries.flatten() {
            if seen + pending.len() >= MAX_CGROUPS {
                break;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_procs(dir: &Path, pids: &[u32]) {
        std::fs::create_dir_all(dir).unwrap();
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(dir.join("cgroup.procs"), text).unwrap();
    }

    fn container(dir: &Path, pids: Vec<u32>) -> Container {
        Container {
            id: "ab".repeat(32),
            name: "web".into(),
            runtime: None,
            pod: None,
            cgroup_path: dir.to_string_lossy().into_owned(),
            cgroup_id: Some(1),
            pids,
        }
    }

    #[test]
    fn reads_the_cgroup_and_every_cgroup_below() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("libpod-x");
        write_procs(&top, &[10, 11]);
        write_procs(&top.join("worker"), &[20]);
        write_procs(&top.join("worker/deeper"), &[30]);
        write_procs(&top.join("empty"), &[]);
        std::fs::write(top.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let pids = cgroup_tree_pids(&top).unwrap();
        assert_eq!(pids.into_iter().collect::<Vec<_>>(), [10, 11, 20, 30]);
        let err = cgroup_tree_pids(&tmp.path().join("gone")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn reports_who_joined_and_when_a_container_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("libpod-x");
        write_procs(&top, &[10]);
        let mut watch = ContainerWatch {
            watched: vec![Watched {
                dir: Some(top.clone()),
                pids: [10].into(),
                container: container(&top, vec![10]),
                stopped: false,
            }],
            last_scan: None,
            pods: Vec::new(),
            cache: None,
        };
        assert_eq!(watch.update(), Changes::default());
        // `podman exec`: a process joins, in a sub-cgroup here.
        write_procs(&top.join("exec"), &[12]);
        assert_eq!(
            watch.update(),
            Changes {
                joined: vec![12],
                ..Changes::default()
            }
        );
        assert_eq!(watch.pids(), [10, 12]);
        // The first process exits and its pid comes back in the container:
        // a new process.
        write_procs(&top, &[]);
        assert_eq!(watch.update().joined, Vec::<u32>::new());
        write_procs(&top, &[10]);
        assert_eq!(watch.update().joined, [10]);
        assert!(!watch.all_stopped());
        // Stopped: the runtime removes the cgroup.
        std::fs::remove_dir_all(&top).unwrap();
        assert_eq!(
            watch.update(),
            Changes {
                stopped: vec!["web".into()],
                ..Changes::default()
            }
        );
        assert!(watch.all_stopped());
        // Final: a cgroup of the same name later is not the container.
        write_procs(&top, &[40]);
        assert_eq!(watch.update(), Changes::default());
    }
}
